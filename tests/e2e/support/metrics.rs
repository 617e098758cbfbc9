//! `/metrics` as a test reads it: one scrape, parsed into samples, summed by labels.

use std::collections::BTreeMap;

use super::http::raw_get;

/// One scrape of `/metrics`: every sample with its labels.
pub struct Scrape {
    /// Every sample: name, labels, value.
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Scrapes `GET /metrics` of `addr` (`host:port`).
    pub fn of(addr: &str) -> Scrape {
        let r = raw_get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        Scrape::parse(&r.text())
    }

    /// Parses the Prometheus / OpenMetrics text format (no timestamps, no exemplars).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("sample line has a value");
            let name = line[..name_end].to_owned();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices();
                let mut key = String::new();
                let end = loop {
                    let (i, c) = chars.next().expect("closing brace");
                    match c {
                        '}' => break i,
                        ',' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                            let mut value = String::new();
                            loop {
                                match chars.next().expect("closing quote").1 {
                                    '\\' => match chars.next().expect("escape").1 {
                                        'n' => value.push('\n'),
                                        other => value.push(other),
                                    },
                                    '"' => break,
                                    other => value.push(other),
                                }
                            }
                            labels.insert(std::mem::take(&mut key), value);
                        }
                        other => key.push(other),
                    }
                };
                rest = &body[end + 1..];
            }
            let value = rest
                .split_whitespace()
                .next()
                .expect("value")
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("value of {line}: {e}"));
            samples.push((name, labels, value));
        }
        Scrape { samples }
    }

    /// The sum of the samples named `name` whose labels include every pair in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}
