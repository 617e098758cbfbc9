//! The scheduled sync's recent runs, kept by the serve process for the console and
//! `GET /admin/v1/syncs`: a bounded list, newest first.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Runs kept.
pub const KEPT_RUNS: usize = 50;

/// One scheduled sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRun {
    /// When it started, Unix seconds.
    pub started: u64,
    /// How long it took, in seconds.
    pub seconds: u64,
    /// The list file.
    pub list: String,
    /// Images in the list.
    pub images: usize,
    /// Images that failed.
    pub failed: usize,
    /// Bytes fetched from upstreams.
    pub bytes_fetched: u64,
    /// Problems: lines skipped, images that failed and why (at most 20).
    pub errors: Vec<String>,
}

/// The recent runs.
#[derive(Debug, Default)]
pub struct SyncLog {
    runs: Mutex<VecDeque<SyncRun>>,
}

impl SyncLog {
    /// Records a finished run, dropping the oldest past [`KEPT_RUNS`].
    pub fn push(&self, run: SyncRun) {
        let mut runs = self.runs.lock().expect("sync log lock");
        runs.push_front(run);
        runs.truncate(KEPT_RUNS);
    }

    /// The runs, newest first.
    pub fn list(&self) -> Vec<SyncRun> {
        self.runs
            .lock()
            .expect("sync log lock")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_runs() {
        let log = SyncLog::default();
        for i in 0..(KEPT_RUNS as u64 + 5) {
            log.push(SyncRun {
                started: i,
                seconds: 1,
                list: "l".into(),
                images: 1,
                failed: 0,
                bytes_fetched: 0,
                errors: vec![],
            });
        }
        let runs = log.list();
        assert_eq!(runs.len(), KEPT_RUNS);
        assert_eq!(runs[0].started, KEPT_RUNS as u64 + 4);
    }
}
