//! The console's time series: what ferry served over the last hour, day and week, kept by
//! ferry itself in bounded memory (60 one-minute, 288 five-minute and 168 one-hour buckets)
//! so a mirror without Prometheus still has its charts. Saved as JSON with
//! [`Series::save`] (temporary file, then rename) and read back at start with [`Series::load`].

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What happened in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    /// Requests answered.
    pub requests: u64,
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// Body bytes sent to clients.
    pub served_bytes: u64,
    /// Bytes received from upstreams.
    pub upstream_bytes: u64,
    /// Cold downloads finished.
    pub cold_count: u64,
    /// Their total time, in milliseconds.
    pub cold_ms_sum: u64,
    /// The longest of them, in milliseconds.
    pub cold_ms_max: u64,
    /// Requests refused by access control or fair use.
    pub rejected: u64,
}

impl Sample {
    /// Adds `o` (sums, and the larger maximum).
    pub fn add(&mut self, o: &Sample) {
        self.requests += o.requests;
        self.hits += o.hits;
        self.misses += o.misses;
        self.served_bytes += o.served_bytes;
        self.upstream_bytes += o.upstream_bytes;
        self.cold_count += o.cold_count;
        self.cold_ms_sum += o.cold_ms_sum;
        self.cold_ms_max = self.cold_ms_max.max(o.cold_ms_max);
        self.rejected += o.rejected;
    }

    /// Hits over hits and misses, when there was either.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0).then(|| self.hits as f64 / all as f64)
    }

    /// Mean cold-download time in milliseconds, when there was one.
    pub fn cold_ms_mean(&self) -> Option<f64> {
        (self.cold_count > 0).then(|| self.cold_ms_sum as f64 / self.cold_count as f64)
    }
}

/// A chart's time span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last hour, per minute.
    Hour,
    /// The last 24 hours, per five minutes.
    Day,
    /// The last 7 days, per hour.
    Week,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    /// `1h`, `24h` or `7d`.
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "1h" => Some(Window::Hour),
            "24h" | "1d" => Some(Window::Day),
            "7d" | "1w" => Some(Window::Week),
            _ => None,
        }
    }

    /// `1h`, `24h` or `7d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    /// Seconds per bucket.
    pub fn step(self) -> u64 {
        match self {
            Window::Hour => 60,
            Window::Day => 300,
            Window::Week => 3600,
        }
    }

    /// Buckets kept.
    pub fn buckets(self) -> usize {
        match self {
            Window::Hour => 60,
            Window::Day => 288,
            Window::Week => 168,
        }
    }
}

/// One bucket: its start (Unix seconds) and what happened in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket, Unix seconds.
    pub start: u64,
    /// Its sums.
    #[serde(flatten)]
    pub sample: Sample,
}

/// Fixed-size buckets of one window, oldest first; never more than the window's count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Ring {
    buckets: VecDeque<Point>,
}

impl Ring {
    fn record(&mut self, w: Window, now: u64, s: &Sample) {
        let start = now - now % w.step();
        match self.buckets.back_mut() {
            Some(last) if last.start == start => last.sample.add(s),
            // A clock that went back: count it in the newest bucket rather than reorder.
            Some(last) if last.start > start => last.sample.add(s),
            _ => self.buckets.push_back(Point { start, sample: *s }),
        }
        self.prune(w, now);
    }

    /// Drops buckets that left the window (and any beyond its count).
    fn prune(&mut self, w: Window, now: u64) {
        let oldest = (now - now % w.step()).saturating_sub(w.step() * (w.buckets() as u64 - 1));
        while self
            .buckets
            .front()
            .is_some_and(|p| p.start < oldest || self.buckets.len() > w.buckets())
        {
            self.buckets.pop_front();
        }
    }

    /// Every bucket of the window ending at `now`, zeros where nothing was recorded.
    fn points(&self, w: Window, now: u64) -> Vec<Point> {
        let step = w.step();
        let last = now - now % step;
        let first = last.saturating_sub(step * (w.buckets() as u64 - 1));
        let mut out = Vec::with_capacity(w.buckets());
        let mut it = self.buckets.iter().filter(|p| p.start >= first).peekable();
        let mut start = first;
        while start <= last {
            let sample = match it.peek() {
                Some(p) if p.start == start => it.next().map(|p| p.sample).unwrap_or_default(),
                _ => Sample::default(),
            };
            out.push(Point { start, sample });
            start += step;
        }
        out
    }
}

/// The three windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    hour: Ring,
    day: Ring,
    week: Ring,
}

/// Why a saved series could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// It is not a saved series.
    Corrupt(serde_json::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read it: {e}"),
            LoadError::Corrupt(e) => write!(f, "it is not a saved time series: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl Series {
    fn ring(&self, w: Window) -> &Ring {
        match w {
            Window::Hour => &self.hour,
            Window::Day => &self.day,
            Window::Week => &self.week,
        }
    }

    /// Counts `s` at `now` (Unix seconds) in every window.
    pub fn record(&mut self, now: u64, s: &Sample) {
        self.hour.record(Window::Hour, now, s);
        self.day.record(Window::Day, now, s);
        self.week.record(Window::Week, now, s);
    }

    /// Every bucket of `w` ending at `now`, oldest first (always `w.buckets()` of them).
    pub fn points(&self, w: Window, now: u64) -> Vec<Point> {
        self.ring(w).points(w, now)
    }

    /// Buckets held in memory, all windows together (at most 60 + 288 + 168).
    pub fn len(&self) -> usize {
        Window::ALL
            .iter()
            .map(|w| self.ring(*w).buckets.len())
            .sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The series as JSON (for the file, or for Redis).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a series serializes")
    }

    /// A series read back from [`Series::to_json`], pruned to the windows ending at `now`.
    pub fn from_json(text: &str, now: u64) -> Result<Series, serde_json::Error> {
        let mut s: Series = serde_json::from_str(text)?;
        for w in Window::ALL {
            let ring = match w {
                Window::Hour => &mut s.hour,
                Window::Day => &mut s.day,
                Window::Week => &mut s.week,
            };
            let mut v: Vec<Point> = ring.buckets.drain(..).collect();
            v.sort_by_key(|p| p.start);
            v.dedup_by_key(|p| p.start);
            ring.buckets = v.into();
            ring.prune(w, now);
        }
        Ok(s)
    }

    /// Writes the series to `path` atomically: a temporary file beside it, then a rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.to_json().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a series saved by [`Series::save`]; a missing file is an empty series.
    pub fn load(path: &Path, now: u64) -> Result<Series, LoadError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Series::from_json(&text, now).map_err(LoadError::Corrupt),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Series::default()),
            Err(e) => Err(LoadError::Io(e)),
        }
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
