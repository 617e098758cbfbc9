//! `GET /ui/admin/?window=1h|24h|7d`: what the mirror did over the last hour, day or week:
//! requests and rejections, cache hit ratio, bytes served against bytes fetched upstream
//! (the upstream traffic saved), and cold-download times, as SVG charts and totals.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use ferry_metrics::series::{Point, Sample, Window};
use http::StatusCode;
use maud::{Markup, PreEscaped, html};

use super::layout::{Nav, bytes, page, respond};
use super::operator::guard;
use super::sampler::unix_now;
use super::svg::{Chart, Line};
use crate::App;

/// The window named by `?window=`, else the last hour.
pub fn window_of(query: Option<&str>) -> Window {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "window")
        .and_then(|(_, v)| Window::parse(&v))
        .unwrap_or(Window::Hour)
}

fn span(w: Window) -> &'static str {
    match w {
        Window::Hour => "-1h",
        Window::Day => "-24h",
        Window::Week => "-7d",
    }
}

fn line(label: &str, class: &'static str, points: &[Point], f: fn(&Sample) -> Option<f64>) -> Line {
    Line {
        label: label.to_owned(),
        class,
        values: points.iter().map(|p| f(&p.sample)).collect(),
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn size(v: f64) -> String {
    bytes(v as u64)
}

fn millis(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// The four charts of a window.
pub fn charts(w: Window, points: &[Point]) -> Vec<(&'static str, Chart<'static>)> {
    vec![
        (
            "requests",
            Chart {
                title: "Requests and rejected requests",
                lines: vec![
                    line("requests", "s0", points, |s| Some(s.requests as f64)),
                    line("rejected", "s1", points, |s| Some(s.rejected as f64)),
                ],
                span: (span(w), "now"),
                format: count,
                max: None,
            },
        ),
        (
            "hit-ratio",
            Chart {
                title: "Cache hit ratio",
                lines: vec![line("hit ratio", "s2", points, Sample::hit_ratio)],
                span: (span(w), "now"),
                format: percent,
                max: Some(1.0),
            },
        ),
        (
            "traffic",
            Chart {
                title: "Bytes served and bytes fetched upstream",
                lines: vec![
                    line("served to clients", "s0", points, |s| {
                        Some(s.served_bytes as f64)
                    }),
                    line("fetched upstream", "s3", points, |s| {
                        Some(s.upstream_bytes as f64)
                    }),
                ],
                span: (span(w), "now"),
                format: size,
                max: None,
            },
        ),
        (
            "cold",
            Chart {
                title: "Cold-download time",
                lines: vec![
                    line("mean", "s0", points, Sample::cold_ms_mean),
                    line("longest", "s1", points, |s| {
                        (s.cold_count > 0).then_some(s.cold_ms_max as f64)
                    }),
                ],
                span: (span(w), "now"),
                format: millis,
                max: None,
            },
        ),
    ]
}

fn figure(id: &str, chart: &Chart) -> Markup {
    html! {
        figure id=(format!("chart-{id}")) {
            figcaption { (chart.title) }
            (PreEscaped(chart.render()))
            ul class="legend" {
                @for l in &chart.lines { li class=(l.class) { span { (l.label) } } }
            }
        }
    }
}

fn cards(total: &Sample, app: &App) -> Markup {
    let saved = total.served_bytes.saturating_sub(total.upstream_bytes);
    let ratio = total.hit_ratio().map_or("–".to_owned(), percent);
    let cold = total.cold_ms_mean().map_or("–".to_owned(), millis);
    let items = [
        ("Requests", total.requests.to_string()),
        ("Cache hit ratio", ratio),
        ("Served to clients", bytes(total.served_bytes)),
        ("Fetched upstream", bytes(total.upstream_bytes)),
        ("Upstream traffic saved", bytes(saved)),
        (
            "Cold downloads",
            format!("{} (mean {cold})", total.cold_count),
        ),
        ("Rejected", total.rejected.to_string()),
        (
            "Cached",
            format!(
                "{} in {} blobs",
                bytes(app.mirror.index().total()),
                app.mirror.index().len()
            ),
        ),
    ];
    html! {
        div class="cards" {
            @for (k, v) in items { div class="card" { (k) strong { (v) } } }
        }
    }
}

/// `GET /ui/admin/`.
pub async fn show(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let op = match guard(&app, &parts, "/ui/admin/").await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let w = window_of(parts.uri.query());
    let points = app.console.points(w, unix_now());
    let mut total = Sample::default();
    points.iter().for_each(|p| total.add(&p.sample));
    let body = html! {
        nav class="windows" aria-label="Time span" {
            @for x in Window::ALL {
                a href=(format!("/ui/admin/?window={}", x.as_str()))
                  aria-current=[(x == w).then_some("page")] { "last " (x.as_str()) }
            }
        }
        (cards(&total, &app))
        h2 { "Charts" }
        div class="charts" {
            @for (id, c) in charts(w, &points) { (figure(id, &c)) }
        }
        p class="note" { "The same series as JSON: " a href=(format!("/ui/admin/api/series?window={}", w.as_str())) { "/admin/v1/series?window=" (w.as_str()) } }
    };
    let nav = Nav {
        public: app.console.config().ui.public,
        operator: Some(&op),
        here: "/ui/admin/",
    };
    respond(StatusCode::OK, page(&nav, "Overview", body))
}
