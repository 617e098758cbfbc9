//! Shipped artefacts built on metric names: docs/operations.md and the Grafana dashboard.

use super::*;

/// A metric family as Prometheus shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    name: String,
    kind: String,
    labels: Vec<String>,
    help: String,
}

impl Family {
    /// The series names a query can use.
    fn series(&self) -> Vec<String> {
        match self.kind.as_str() {
            "counter" => vec![format!("{}_total", self.name)],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// Every metric family of `ferry_metrics::Metrics` with its type, labels and help, read from
/// the exposition after one sample per family, and checked against the names crates/metrics
/// registers (so a new family cannot be missed here, in the docs or on the dashboard).
fn metric_families() -> Vec<Family> {
    use ferry_metrics::*;
    let m = Metrics::new();
    let up = || "docker.io".to_owned();
    m.http_requests
        .get_or_create(&HttpLabels {
            route: "blob",
            method: "GET",
            status: 200,
            upstream: up(),
        })
        .inc();
    m.http_duration
        .get_or_create(&KindLabels {
            upstream: up(),
            kind: "blob",
        })
        .observe(0.01);
    m.served_bytes
        .get_or_create(&ServedLabels {
            upstream: up(),
            source: "cache",
        })
        .inc();
    m.cache("docker.io", "blob", true);
    m.cache("docker.io", "blob", false);
    Metrics::per_upstream(&m.revalidations, "docker.io", 1);
    Metrics::per_upstream(&m.stale_served, "docker.io", 1);
    Metrics::per_upstream(&m.deleted_upstream_served, "docker.io", 1);
    let account = AccountLabels {
        upstream: up(),
        account: "anonymous".into(),
    };
    m.ratelimit_limit.get_or_create(&account).set(100);
    m.ratelimit_remaining.get_or_create(&account).set(76);
    m.upstream_request("docker.io", "blob", 200, 0.01);
    m.source_request("docker.io", "192.0.2.10", 429);
    m.source_resting("docker.io", "192.0.2.10", 1);
    Metrics::per_upstream(&m.upstream_bytes, "docker.io", 1);
    Metrics::per_upstream(&m.segment_hedges, "docker.io", 1);
    Metrics::per_upstream(&m.coalesced_waiters, "docker.io", 1);
    m.inflight_fills.set(0);
    m.fill_failures
        .get_or_create(&ReasonLabels { reason: "digest" })
        .inc();
    m.storage_bytes.set(0);
    m.evictions.inc();
    m.evicted_bytes.inc();
    m.rejected
        .get_or_create(&ReasonLabels { reason: "quota" })
        .inc();
    m.connections_open.set(1);
    m.connections_refused
        .get_or_create(&ReasonLabels {
            reason: "max_connections_per_ip",
        })
        .inc();
    m.connections_timed_out
        .get_or_create(&ReasonLabels {
            reason: "header_timeout",
        })
        .inc();
    m.rule_hit("ip-daily-requests", "deny");
    m.set_sanctions(1, 0);
    m.set_budget("total", 81, 1);
    let text = m.render();

    let mut families: Vec<Family> = Vec::new();
    let mut help = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap();
            help.insert(name.to_owned(), h.trim_end_matches('.').to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                labels: Vec::new(),
                help: help.get(name).cloned().unwrap_or_default(),
            });
        }
    }
    let scrape = Scrape::parse(&text);
    for f in &mut families {
        let series = f.series();
        let sample = scrape
            .samples
            .iter()
            .find(|(n, _, _)| series.contains(n))
            .unwrap_or_else(|| panic!("no sample of {}", f.name));
        f.labels = sample.1.keys().filter(|k| *k != "le").cloned().collect();
        // Keep the declaration order of the label struct (the exposition's order).
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}{{", sample.0)))
            .unwrap_or("");
        f.labels
            .sort_by_key(|l| line.find(&format!("{l}=\"")).unwrap_or(usize::MAX));
    }

    let source =
        std::fs::read_to_string(Path::new(REPO_ROOT).join("crates/metrics/src/lib.rs")).unwrap();
    let registered: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("ferry_") && !s.contains(' '))
        .map(str::to_owned)
        .filter(|s| source.contains(&format!("\"{s}\",")))
        .collect();
    let rendered: BTreeSet<String> = families.iter().map(|f| f.name.clone()).collect();
    assert_eq!(
        rendered, registered,
        "crates/metrics registers a family this test does not sample: add one sample of it to \
         metric_families() in tests/e2e/ops.rs, then update docs/operations.md and the dashboard"
    );
    families
}

const TABLE_START: &str = "<!-- metrics-table:start (generated: FERRY_BLESS_DOCS=1 cargo test --test e2e ops::artefacts::operations_doc) -->";
const TABLE_END: &str = "<!-- metrics-table:end -->";

fn metrics_table() -> String {
    let mut out =
        String::from("| metric (as queried) | type | labels | meaning |\n|---|---|---|---|\n");
    for f in metric_families() {
        let name = match f.kind.as_str() {
            "counter" => format!("`{}_total`", f.name),
            "histogram" => format!("`{}_bucket`, `_sum`, `_count`", f.name),
            _ => format!("`{}`", f.name),
        };
        let labels = if f.labels.is_empty() {
            "–".to_owned()
        } else {
            f.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {name} | {} | {labels} | {} |\n",
            f.kind, f.help
        ));
    }
    out
}

/// The metrics reference in docs/operations.md is exactly what crates/metrics exports (names,
/// types, labels, help). `FERRY_BLESS_DOCS=1` rewrites the table.
#[test]
fn operations_doc_metrics_table_matches_crates_metrics() {
    let path = Path::new(REPO_ROOT).join("docs/operations.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(TABLE_START).expect("table start marker") + TABLE_START.len();
    let end = doc.find(TABLE_END).expect("table end marker");
    let current = doc[start..end].trim();
    let table = metrics_table();
    if std::env::var_os("FERRY_BLESS_DOCS").is_some() {
        let new = format!("{}\n{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        current,
        table.trim(),
        "docs/operations.md's metrics table is out of date: run \
         FERRY_BLESS_DOCS=1 cargo test --test e2e ops::artefacts::operations_doc"
    );
}

/// Every panel of a dashboard, including those inside rows.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels.as_array().expect("panels array") {
        out.push(p);
        if let Some(inner) = p.get("panels") {
            out.extend(all_panels(inner));
        }
    }
    out
}

/// The Grafana dashboard is well-formed JSON with the panels an operator needs, and queries
/// only series ferry exports, covering every one of its metric families.
#[test]
fn grafana_dashboard_is_built_on_ferrys_metrics() {
    let path = Path::new(REPO_ROOT).join("deploy/grafana/ferry-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["schemaVersion"].as_u64().is_some());
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"datasource"), "{variables:?}");

    let families = metric_families();
    let known: BTreeMap<String, String> = families
        .iter()
        .flat_map(|f| f.series().into_iter().map(move |s| (s, f.name.clone())))
        .collect();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in all_panels(&dash["panels"]) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "gridPos.{k} of panel {id}");
        }
        let title = p["title"].as_str().expect("panel title");
        titles.push(title.to_owned());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: {expr}"
            );
            let mut rest = expr;
            while let Some(i) = rest.find("ferry_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = known.get(&name).unwrap_or_else(|| {
                    panic!("{title}: {name} is not a series ferry exports ({expr})")
                });
                used.insert(family.clone());
                rest = &rest[i + name.len()..];
            }
        }
    }
    let all: BTreeSet<String> = families.iter().map(|f| f.name.clone()).collect();
    let unused: Vec<_> = all.difference(&used).collect();
    assert!(unused.is_empty(), "families on no panel: {unused:?}");
    for wanted in [
        "Request rate by route and status",
        "Cache hit ratio",
        "Bytes served: cache vs upstream",
        "Upstream request rate by upstream and status",
        "Upstream latency to response head (p50 / p99) by upstream",
        "Downloads in flight",
        "Coalesced waiters",
        "Cache size",
        "Evictions",
        "Rejected requests by reason",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted:?}");
    }
}
