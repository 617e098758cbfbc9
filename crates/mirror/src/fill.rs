//! Streaming single-flight downloads of blobs ("fills").
//!
//! The first request for a missing blob starts one download on its own task; every request for
//! the same blob through the same upstream while it runs joins it. Downloads are keyed by
//! upstream and digest, never by digest alone: a request never waits on a download through an
//! upstream it did not ask for (one that hangs or drips), it starts its own. When two
//! downloads of one digest both verify, the store keeps one copy (content-addressed, so the
//! second commit is of identical bytes). The download writes a spool file and publishes how many
//! bytes it has received; it keeps the newest of them in memory ([`Tail`]), so a client that
//! keeps up is fed from the network's buffers, and one that lags reads the spool file from its
//! own offset ([`ferry_storage::ChunkReader::growing`]): the first bytes reach every client
//! before the download ends and memory stays bounded. The task hashes as it writes; only when
//! the length and the digest match is the file fsync'ed and handed to the store, which
//! publishes it atomically.
//! A cut connection is resumed with a `Range` request (up to [`MAX_RESUMES`] times); a digest
//! mismatch, a timeout or an upstream error fails every reader and leaves nothing behind.
//! Clients that disconnect only drop their reader: the download goes on for the others and for
//! the cache.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_metrics::{Metrics, ReasonLabels};
use ferry_oci::{Digest, DigestVerifier, RepoName};
use ferry_storage::spool::temp_path;
use ferry_storage::{BlobStore, FillClaim, FillError, Progress, Tail};
use ferry_upstream::{BlobDownload, Upstream};
use tokio::sync::watch;

use crate::error::{MirrorError, Result};
use crate::index::Index;
use crate::segments;
use crate::spool_writer::{SpoolWriter, next_batch};

/// How long readers of a verified download wait for it to be stored before they get its last
/// byte anyway.
const RELEASE_AFTER: Duration = Duration::from_millis(50);

/// Blobs above this size release their readers as soon as they are verified: their fsync
/// alone takes longer than [`RELEASE_AFTER`], so waiting for it only delays the last byte.
const RELEASE_AT_ONCE_ABOVE: u64 = 16 << 20;

/// Bytes behind the newest one a download keeps in memory for readers that lag a little.
const TAIL_KEEP: u64 = 4 << 20;

/// Times a cut download is resumed before giving up.
pub const MAX_RESUMES: usize = 3;

/// What a reader needs once the download has started.
#[derive(Clone)]
pub struct Started {
    /// Blob size, when the upstream said.
    pub size: Option<u64>,
    /// A read handle on the spool file.
    pub file: Arc<File>,
}

/// One download in progress.
pub struct Fill {
    started: watch::Receiver<Option<std::result::Result<Started, MirrorError>>>,
    progress: watch::Sender<Progress>,
    settled: watch::Sender<bool>,
    /// The newest bytes received, for the readers that keep up.
    tail: Arc<Tail>,
    /// Upstream and repository the download comes from.
    source: (String, RepoName),
}

impl Fill {
    /// Whether this download comes from `repo` on `upstream` (so its start proves that the
    /// repository holds the blob).
    pub fn fetches_from(&self, upstream: &str, repo: &RepoName) -> bool {
        self.source.0 == upstream && self.source.1 == *repo
    }

    /// Waits until the download has started (or failed to).
    pub async fn started(&self) -> Result<Started> {
        let mut rx = self.started.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err(MirrorError::fill(FillError::Abandoned));
            }
        }
    }

    /// The newest bytes of the download, in memory.
    pub fn tail(&self) -> Arc<Tail> {
        self.tail.clone()
    }

    /// A receiver of the download's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Waits until the fill is over: stored, or failed. Readers may have been released before
    /// (see [`RELEASE_AFTER`]); this waits for the store itself.
    pub async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        // An error means the sender is gone, which happens only after it said `true`.
        let _ = rx.wait_for(|&s| s).await;
    }

    /// Waits for the end of the download.
    pub async fn finished(&self) -> Result<()> {
        let mut rx = self.progress();
        loop {
            match rx.borrow_and_update().clone() {
                Progress::Done => return Ok(()),
                Progress::Failed(e) => return Err(MirrorError::fill(e)),
                Progress::Growing(_) => {}
            }
            if rx.changed().await.is_err() {
                return Err(MirrorError::fill(FillError::Abandoned));
            }
        }
    }
}

/// Where a fill stores its result.
#[derive(Clone)]
pub struct FillContext {
    /// The cache store.
    pub store: Arc<dyn BlobStore>,
    /// The blob index.
    pub index: Arc<Index>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Longest time a download may take.
    pub timeout: Duration,
    /// Where the download task is tracked (shutdown waits for it).
    pub tasks: tokio_util::task::TaskTracker,
    /// Fires at shutdown: the download is abandoned.
    pub stop: tokio_util::sync::CancellationToken,
}

/// A download's key: the upstream it comes from (with that upstream's `mirrors:`) and the
/// digest.
type FillKey = (Arc<str>, Digest);

/// The downloads in progress, by upstream and digest.
#[derive(Default)]
pub struct Fills {
    map: Arc<Mutex<HashMap<FillKey, Arc<Fill>>>>,
}

/// How a caller got its fill.
pub enum Joined {
    /// The blob turned out to be stored already.
    Stored,
    /// A download: `true` if it was already running.
    Fill(Arc<Fill>, bool),
}

impl Fills {
    /// Joins the download of `digest` from `upstream`, or starts one.
    pub fn join_or_start(
        &self,
        ctx: &FillContext,
        upstream: Arc<Upstream>,
        repo: RepoName,
        digest: &Digest,
    ) -> Joined {
        let key: FillKey = (upstream.name().into(), digest.clone());
        let mut map = self.map.lock().expect("fills lock");
        if let Some(f) = map.get(&key) {
            Metrics::per_upstream(&ctx.metrics.coalesced_waiters, upstream.name(), 1);
            return Joined::Fill(f.clone(), true);
        }
        // Checked under the lock: a fill inserts into the index before it leaves the map.
        if ctx.index.contains(digest) {
            return Joined::Stored;
        }
        let (started_tx, started_rx) = watch::channel(None);
        let (progress_tx, _) = watch::channel(Progress::Growing(0));
        let fill = Arc::new(Fill {
            started: started_rx,
            progress: progress_tx,
            settled: watch::channel(false).0,
            tail: Arc::default(),
            source: (upstream.name().to_owned(), repo.clone()),
        });
        map.insert(key.clone(), fill.clone());
        let job = Job {
            ctx: ctx.clone(),
            upstream,
            repo,
            digest: digest.clone(),
            fill: fill.clone(),
            started: started_tx,
        };
        let map2 = self.map.clone();
        let tasks = job.ctx.tasks.clone();
        tasks.spawn(async move {
            let fill = job.fill.clone();
            job.run().await;
            map2.lock().expect("fills lock").remove(&key);
            fill.settled.send_replace(true);
        });
        Joined::Fill(fill, false)
    }

    /// Number of downloads in progress.
    pub fn len(&self) -> usize {
        self.map.lock().expect("fills lock").len()
    }

    /// Whether no download is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The running download of `digest` from `upstream`, if any.
    pub fn get(&self, upstream: &str, digest: &Digest) -> Option<Arc<Fill>> {
        let key: FillKey = (upstream.into(), digest.clone());
        self.map.lock().expect("fills lock").get(&key).cloned()
    }

    /// Every running download of `digest`, from any upstream.
    pub fn all_of(&self, digest: &Digest) -> Vec<Arc<Fill>> {
        let map = self.map.lock().expect("fills lock");
        map.iter()
            .filter(|((_, d), _)| d == digest)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Job {
    ctx: FillContext,
    upstream: Arc<Upstream>,
    repo: RepoName,
    digest: Digest,
    fill: Arc<Fill>,
    started: watch::Sender<Option<std::result::Result<Started, MirrorError>>>,
}

/// The spool file being written and everything known about the download so far.
struct Spool {
    path: PathBuf,
    size: Option<u64>,
    ingested: bool,
}

impl Job {
    async fn run(self) {
        self.ctx.metrics.inflight_fills.inc();
        let began = std::time::Instant::now();
        let mut spool = None;
        let download = tokio::time::timeout(self.ctx.timeout, self.download(&mut spool));
        let result = tokio::select! {
            r = download => r.unwrap_or_else(|_| Err(self.failure(FillError::Timeout))),
            // Shutdown: the download ends now and leaves nothing behind.
            _ = self.ctx.stop.cancelled() => Err(self.failure(FillError::Abandoned)),
        };
        self.ctx.metrics.inflight_fills.dec();
        match result {
            Ok(()) => {
                self.ctx.metrics.totals.cold_download(began.elapsed());
                self.fill.progress.send_replace(Progress::Done);
            }
            Err(e) => {
                self.fail(&e);
                if let Some(s) = spool.filter(|s: &Spool| !s.ingested) {
                    let _ = std::fs::remove_file(&s.path);
                }
            }
        }
    }

    fn failure(&self, error: FillError) -> MirrorError {
        MirrorError::Fill {
            digest: self.digest.to_string(),
            error,
        }
    }

    fn fail(&self, e: &MirrorError) {
        let error = e.to_fill_error();
        let reason = error.reason();
        if !matches!(
            e,
            MirrorError::Upstream(ferry_upstream::UpstreamError::NotFound { .. })
        ) {
            tracing::warn!(digest = %self.digest, upstream = self.upstream.name(), repository = %self.repo, error = %e, "blob download failed");
        }
        self.ctx
            .metrics
            .fill_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        self.started.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Err(e.clone()));
                true
            } else {
                false
            }
        });
        self.fill.progress.send_replace(Progress::Failed(error));
    }

    async fn download(&self, slot: &mut Option<Spool>) -> Result<()> {
        // Replicas sharing a store take turns: the one holding the claim downloads from the
        // upstream; one that waited and then finds the blob stored copies it from the store.
        let claim =
            self.ctx
                .store
                .claim_fill(self.upstream.name(), &self.digest, self.ctx.timeout / 2);
        let (mut dl, _lease) = match claim.await? {
            FillClaim::Owner(lease) => (
                segments::first_request(&self.upstream, &self.repo, &self.digest).await?,
                Some(lease),
            ),
            FillClaim::Stored => (self.stored_copy().await?, None),
        };
        let path = temp_path(&self.ctx.store.spool_dir());
        let file = File::create(&path)?;
        let reader = Arc::new(File::open(&path)?);
        let spool = slot.insert(Spool {
            path,
            size: dl.size,
            ingested: false,
        });
        let _ = self.started.send(Some(Ok(Started {
            size: dl.size,
            file: reader.clone(),
        })));
        if let (true, Some(size)) = (dl.partial, dl.size) {
            let cfg = self.upstream.segments();
            let (probed, fast) = segments::probe(dl, cfg.threshold.0, cfg.one_stream_above).await;
            dl = probed;
            if !fast {
                let file = Arc::new(file);
                let hasher = self.segmented(dl, size, file.clone(), reader).await?;
                return self.verify_and_store(spool, file, hasher, size).await;
            }
            // A near, fast upstream: the rest comes as one stream after the first answer.
            tracing::debug!(digest = %self.digest, size, "first answer fast: one stream");
        }
        if let Some(size) = dl.size {
            preallocate(&file, size);
        }
        let (file, hasher, written) = self.stream_whole(dl, file).await?;
        let file = Arc::new(file);
        self.fill.progress.send_replace(Progress::Growing(written));
        self.verify_and_store(spool, file, hasher, written).await
    }

    /// Streams a whole download into the spool file `file`, resuming a cut body with a range
    /// request (up to `MAX_RESUMES` times); returns the file, its digest check and its length.
    async fn stream_whole(
        &self,
        dl: BlobDownload,
        file: File,
    ) -> Result<(File, DigestVerifier, u64)> {
        let size = dl.size;
        let mut writer = SpoolWriter::new(file, DigestVerifier::for_digest(&self.digest));
        let mut stream = dl.stream;
        let mut skip = 0u64;
        let (mut resumes, mut rests) = (0, 0);
        loop {
            let (mut batch, eof, err) = next_batch(&mut stream).await;
            batch.skip(&mut skip);
            if !batch.is_empty() {
                let at = writer.submitted();
                let received = at + batch.len() as u64;
                if size.is_some_and(|s| received > s) {
                    return Err(self.failure(FillError::TooLong));
                }
                // Readers that keep up get these bytes now, from memory; the file has them
                // once the write completes.
                self.fill.tail.push(at, batch.chunks());
                self.fill.progress.send_replace(Progress::Growing(received));
                writer.submit(batch).await?;
                let durable = writer.written();
                self.fill
                    .tail
                    .trim(durable.min(received.saturating_sub(TAIL_KEEP)));
            }
            match (eof, err) {
                // A ranged first answer ended: the rest comes in one more request.
                (true, None) if size.is_some_and(|s| writer.submitted() < s) && rests < 1 => {
                    rests += 1;
                    let at = writer.submitted();
                    let dl = self.upstream.blob(&self.repo, &self.digest, at).await?;
                    skip = at - dl.offset.min(at);
                    stream = dl.stream;
                }
                (true, None) => break,
                (_, Some(e)) if resumes < MAX_RESUMES => {
                    resumes += 1;
                    let at = writer.submitted();
                    tracing::info!(digest = %self.digest, at, error = %e, "download cut, resuming");
                    let dl = self.upstream.blob(&self.repo, &self.digest, at).await?;
                    skip = at - dl.offset.min(at);
                    stream = dl.stream;
                }
                (_, Some(e)) => {
                    return Err(self.failure(FillError::Cut {
                        resumes: MAX_RESUMES,
                        message: e.to_string(),
                    }));
                }
                (false, None) => {}
            }
        }
        let written = writer.submitted();
        let (file, hasher) = writer.finish().await?;
        Ok((file, hasher, written))
    }

    /// Fetches the rest of a large blob in parallel segments (the first is `first`).
    async fn segmented(
        &self,
        first: BlobDownload,
        size: u64,
        writer: Arc<File>,
        reader: Arc<File>,
    ) -> Result<DigestVerifier> {
        let cfg = self.upstream.segments();
        let plan = segments::plan(size, cfg.threshold.0, cfg.size.0);
        tracing::debug!(digest = %self.digest, size, segments = plan.len(), "segmented download");
        let job = segments::Segmented {
            upstream: self.upstream.clone(),
            repo: self.repo.clone(),
            digest: self.digest.clone(),
            writer,
            reader,
            size,
            parallel: cfg.parallel,
            hedge: cfg.hedge,
            metrics: self.ctx.metrics.clone(),
        };
        let progress = &self.fill.progress;
        job.run(first, plan, |n| {
            progress.send_replace(Progress::Growing(n));
        })
        .await
    }

    /// The blob as stored by another replica, in the shape of an upstream download.
    async fn stored_copy(&self) -> Result<BlobDownload> {
        let body = self.ctx.store.open(&self.digest, 0, None).await?;
        let body = body.ok_or_else(|| self.failure(FillError::Vanished))?;
        Ok(BlobDownload {
            size: Some(body.size),
            offset: 0,
            stream: body.stream,
            partial: false,
        })
    }

    async fn verify_and_store(
        &self,
        spool: &mut Spool,
        file: Arc<File>,
        hasher: DigestVerifier,
        written: u64,
    ) -> Result<()> {
        if let Some(size) = spool.size.filter(|&s| s != written) {
            return Err(self.failure(FillError::Short {
                got: written,
                expected: size,
            }));
        }
        let got = hasher.finish();
        if got != self.digest {
            return Err(self.failure(FillError::DigestMismatch {
                got: got.to_string(),
            }));
        }
        // Verified. Storing is the fsync of the spool file and its move into the store. A quick
        // store (a small blob on local disk) completes before readers get the last byte, so a
        // finished pull leaves the blob cached; a slow one (the fsync of a large blob, an
        // object-store upload) releases them after RELEASE_AFTER, and a large blob at once,
        // and completes behind them. If storing then fails, they still got correct bytes; the
        // blob is just not cached.
        let path = spool.path.clone();
        let store = async {
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|e| self.failure(FillError::Storage(e.to_string())))??;
            self.ctx.store.ingest(&self.digest, &path).await?;
            Ok::<(), MirrorError>(())
        };
        tokio::pin!(store);
        let patience = if written > RELEASE_AT_ONCE_ABOVE {
            Duration::ZERO
        } else {
            RELEASE_AFTER
        };
        tokio::select! {
            stored = &mut store => stored?,
            _ = tokio::time::sleep(patience) => {
                self.fill.progress.send_replace(Progress::Done);
                store.await?;
            }
        }
        spool.ingested = true;
        self.ctx.index.insert(self.digest.clone(), written);
        Ok(())
    }
}

/// Reserves the blocks of a spool file of `size` bytes ahead (its length still grows with the
/// writes), so each write only fills them: on ext4 the per-page block reservation of delayed
/// allocation was a tenth of a cold download's CPU. Best effort: a filesystem without
/// `fallocate` just allocates as it goes.
fn preallocate(file: &File, size: u64) {
    use rustix::fs::{FallocateFlags, fallocate};
    if let Err(e) = fallocate(file, FallocateFlags::KEEP_SIZE, 0, size) {
        tracing::debug!(error = %e, size, "spool file not preallocated");
    }
}
