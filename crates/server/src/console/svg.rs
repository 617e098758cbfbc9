//! Line charts as inline SVG, drawn by ferry (no script, no external library): a few
//! polylines over a shared y scale, the scale's top value, and the time span's ends.

use std::fmt::Write as _;

/// Width and height of the drawing area, in SVG units.
const W: f64 = 600.0;
const H: f64 = 150.0;
/// Room for labels left and below.
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 22.0;
/// Room for the round line ends at the top and right.
const TOP: f64 = 4.0;
const RIGHT: f64 = 6.0;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Its name (in the legend).
    pub label: String,
    /// The CSS class that colours it (`s0`, `s1`, ...).
    pub class: &'static str,
    /// One value per bucket, oldest first; `None` where there is no value (no line drawn).
    pub values: Vec<Option<f64>>,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// The accessible name (`<title>`).
    pub title: &'a str,
    /// The lines.
    pub lines: Vec<Line>,
    /// Labels under the left and right ends (`-1h`, `now`).
    pub span: (&'a str, &'a str),
    /// Formats a y value (the scale's top).
    pub format: fn(f64) -> String,
    /// A fixed top of the scale (1.0 for a ratio); else the largest value.
    pub max: Option<f64>,
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Chart<'_> {
    /// The chart's top value: the fixed one, else the largest (at least 1, so an empty
    /// chart has a scale).
    fn top(&self) -> f64 {
        self.max.unwrap_or_else(|| {
            self.lines
                .iter()
                .flat_map(|l| l.values.iter().flatten())
                .fold(0.0_f64, |a, b| a.max(*b))
                .max(1.0)
        })
    }

    /// The `d` attribute of one line: a move to each run's first point, lines between.
    fn path(&self, values: &[Option<f64>], top: f64) -> String {
        let n = values.len().max(2) - 1;
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else {
                pen_down = false;
                continue;
            };
            let x = LEFT + (W - LEFT - RIGHT) * i as f64 / n as f64;
            let y = TOP + (H - BOTTOM - TOP) * (1.0 - (v / top).clamp(0.0, 1.0));
            let op = if pen_down { 'L' } else { 'M' };
            let _ = write!(d, "{op}{x:.1},{y:.1} ");
            // A lone value (its neighbours have none) is drawn as a dot: a zero-length
            // segment with round caps.
            let next_empty = values.get(i + 1).is_none_or(Option::is_none);
            if !pen_down && next_empty {
                let _ = write!(d, "L{x:.1},{y:.1} ");
            }
            pen_down = true;
        }
        d.trim_end().to_owned()
    }

    /// The SVG element.
    pub fn render(&self) -> String {
        let top = self.top();
        let base = H - BOTTOM;
        let mut s = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
            t = escape(self.title)
        );
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{W}\" y2=\"{base}\"/>\
             <line class=\"grid\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{W}\" y2=\"{TOP}\"/>\
             <text class=\"tick\" x=\"{x}\" y=\"14\" text-anchor=\"end\">{max}</text>\
             <text class=\"tick\" x=\"{x}\" y=\"{base}\" text-anchor=\"end\">0</text>\
             <text class=\"tick\" x=\"{LEFT}\" y=\"{H}\">{a}</text>\
             <text class=\"tick\" x=\"{W}\" y=\"{H}\" text-anchor=\"end\">{b}</text>",
            x = LEFT - 4.0,
            max = escape(&(self.format)(top)),
            a = escape(self.span.0),
            b = escape(self.span.1),
        );
        for l in &self.lines {
            let d = self.path(&l.values, top);
            if !d.is_empty() {
                let _ = write!(
                    s,
                    "<path class=\"line {}\" d=\"{d}\"><title>{}</title></path>",
                    l.class,
                    escape(&l.label)
                );
            }
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<Option<f64>>) -> String {
        Chart {
            title: "Requests <per minute>",
            lines: vec![Line {
                label: "requests".into(),
                class: "s0",
                values,
            }],
            span: ("-1h", "now"),
            format: |v| format!("{v:.0}"),
            max: None,
        }
        .render()
    }

    /// The points of the first path: (x, y) pairs.
    fn points(svg: &str) -> Vec<(f64, f64)> {
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        d.split(' ')
            .map(|p| {
                let (x, y) = p[1..].split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn values_become_points_scaled_to_the_largest() {
        let svg = chart(vec![Some(0.0), Some(5.0), Some(10.0)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        let p = points(&svg);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], (LEFT, H - BOTTOM));
        assert_eq!(p[2], (W - RIGHT, TOP));
        assert!((p[1].1 - (H - BOTTOM + TOP) / 2.0).abs() < 0.1, "{p:?}");
        assert!(svg.contains(">10</text>"), "{svg}");
    }

    #[test]
    fn gaps_lift_the_pen_and_text_is_escaped() {
        let svg = chart(vec![Some(1.0), None, Some(1.0), Some(2.0)]);
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        // The lone first value is a dot (a zero-length segment), then one line.
        assert_eq!(d.matches('L').count(), 2, "{d}");
        assert!(d.starts_with("M70.0,66.0 L70.0,66.0 M"), "{d}");
        assert!(svg.contains("Requests &lt;per minute&gt;"), "{svg}");
        assert!(!svg.contains("<per"), "{svg}");
    }

    #[test]
    fn an_empty_chart_has_a_scale_and_no_path() {
        let svg = chart(vec![None, None]);
        assert!(!svg.contains("<path"), "{svg}");
        assert!(svg.contains(">1</text>"), "{svg}");
        let flat = chart(vec![Some(0.0); 60]);
        assert_eq!(points(&flat).len(), 60);
    }
}
