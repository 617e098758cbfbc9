//! The result of a sync or copy: per image what was fetched and what was already there, or why
//! it failed, rendered as the table printed at the end of a run.

use std::fmt::Write as _;
use std::time::Duration;

use ferry_oci::Digest;

use crate::error::SyncError;

/// What one image transfer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Digest of the top manifest (index or image manifest).
    pub digest: Option<Digest>,
    /// Manifests handled (index and platform manifests).
    pub manifests: usize,
    /// Blobs downloaded (and uploaded, for a copy).
    pub blobs_fetched: usize,
    /// Blobs that were already there.
    pub blobs_present: usize,
    /// Blobs mounted from another repository (copy only).
    pub blobs_mounted: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
    /// Bytes of all blobs of the image.
    pub bytes_total: u64,
    /// Referrers (signatures, SBOMs, attestations) transferred with it.
    pub referrers: usize,
}

impl ImageStats {
    /// Adds what another walk (a referrer's) did: manifests, blobs, bytes, referrers.
    pub fn add(&mut self, o: &ImageStats) {
        self.manifests += o.manifests;
        self.blobs_fetched += o.blobs_fetched;
        self.blobs_present += o.blobs_present;
        self.blobs_mounted += o.blobs_mounted;
        self.bytes_fetched += o.bytes_fetched;
        self.bytes_total += o.bytes_total;
        self.referrers += o.referrers;
    }
}

/// One image of a run.
#[derive(Debug, Clone)]
pub struct ImageResult {
    /// The image's label (`registry/repo:tag`), or the list line for a line that failed early.
    pub image: String,
    /// What happened.
    pub result: Result<ImageStats, SyncError>,
    /// Time spent.
    pub elapsed: Duration,
}

/// Every image of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Results in the order of the list.
    pub images: Vec<ImageResult>,
}

impl Summary {
    /// The images that failed.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &SyncError)> {
        self.images
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|e| (r.image.as_str(), e)))
    }

    /// Whether any image failed.
    pub fn has_failures(&self) -> bool {
        self.failures().next().is_some()
    }

    /// Whether the run was interrupted.
    pub fn was_cancelled(&self) -> bool {
        self.failures().any(|(_, e)| *e == SyncError::Cancelled)
    }

    /// Bytes downloaded in all.
    pub fn bytes_fetched(&self) -> u64 {
        self.images
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .map(|s| s.bytes_fetched)
            .sum()
    }

    /// The summary table: one row per image, then a total line.
    pub fn table(&self) -> String {
        let header = [
            "IMAGE",
            "MANIFESTS",
            "BLOBS NEW",
            "BLOBS HAD",
            "FETCHED",
            "TIME",
            "RESULT",
        ];
        let mut rows: Vec<[String; 7]> = vec![header.map(str::to_owned)];
        for r in &self.images {
            rows.push(row(r));
        }
        let widths: Vec<usize> = (0..7)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c == 6 {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let failed = self.failures().count();
        let _ = writeln!(
            out,
            "{} images: {} ok, {} failed; {} fetched",
            self.images.len(),
            self.images.len() - failed,
            failed,
            human_bytes(self.bytes_fetched())
        );
        out
    }
}

fn row(r: &ImageResult) -> [String; 7] {
    let time = format!("{:.1}s", r.elapsed.as_secs_f64());
    match &r.result {
        Ok(s) => [
            r.image.clone(),
            s.manifests.to_string(),
            s.blobs_fetched.to_string(),
            (s.blobs_present + s.blobs_mounted).to_string(),
            human_bytes(s.bytes_fetched),
            time,
            match s.referrers {
                0 => "ok".into(),
                n => format!("ok (+{n} referrers)"),
            },
        ],
        Err(e) => [
            r.image.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            time,
            format!("FAILED ({})", e.reason()),
        ],
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    ferry_config::ByteSize(n).human()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_failures() {
        let s = Summary {
            images: vec![
                ImageResult {
                    image: "127.0.0.1:5001/test/multi:v1".into(),
                    result: Ok(ImageStats {
                        manifests: 3,
                        blobs_fetched: 2,
                        blobs_present: 2,
                        bytes_fetched: 3 << 20,
                        ..Default::default()
                    }),
                    elapsed: Duration::from_millis(1200),
                },
                ImageResult {
                    image: "docker.io/library/nope:1".into(),
                    result: Err(SyncError::NotFound("manifest unknown".into())),
                    elapsed: Duration::ZERO,
                },
            ],
        };
        let t = s.table();
        assert!(t.contains("3.0 MiB"), "{t}");
        assert!(t.contains("FAILED (not found)"), "{t}");
        assert!(t.contains("2 images: 1 ok, 1 failed"), "{t}");
        assert!(s.has_failures() && !s.was_cancelled());
        assert_eq!(human_bytes(512), "512 B");
    }
}
