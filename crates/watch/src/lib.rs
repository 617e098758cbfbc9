//! # ferry-watch: one watcher for the files a running ferry reloads
//!
//! `ferry serve` reloads its config file and its TLS certificate and key; `ferry webhook` its
//! config and its certificate. [`FileWatch`] is one task for all of them: each group of paths
//! has its own callback, called when one of its files changes.
//!
//! - The *directories* holding the files are watched (`notify`), not the files: Kubernetes
//!   updates a mounted ConfigMap or Secret by writing a new timestamped directory and renaming
//!   the `..data` symlink over the old one, so the file's own inode never changes.
//! - Events are debounced (a rotation touches several entries), and the files are also looked
//!   at every `fallback` interval in case events are lost (some network and overlay
//!   filesystems drop them, and a watch may not start at all).
//! - A file *changed* when its modification time, its length or the target it resolves to
//!   differ from the last look; a file that is missing is not a change (the callback would
//!   only fail), its return is.
//!
//! The task ends when its cancellation token is cancelled; the caller spawns it on the tracker
//! that shutdown waits for.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long to wait after an event for the rest of a burst.
const DEBOUNCE: Duration = Duration::from_millis(300);

type Callback = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What is known of a file at one look: modification time, length, resolved path.
type Stamp = Option<(Option<SystemTime>, u64, Option<PathBuf>)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok(), m.len(), std::fs::canonicalize(p).ok()))
}

/// Files watched together, and what to do when one of them changes.
struct Group {
    paths: Vec<PathBuf>,
    seen: Vec<Stamp>,
    on_change: Callback,
}

impl Group {
    /// Whether a file changed since the last look (and all of them are there now).
    fn changed(&mut self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        if now == self.seen || now.iter().any(Option::is_none) {
            return false;
        }
        self.seen = now;
        true
    }
}

/// Groups of files, each with a callback; [`FileWatch::run`] watches them all.
#[derive(Default)]
pub struct FileWatch {
    groups: Vec<Group>,
}

impl FileWatch {
    /// Nothing watched yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `on_change` (and waits for it) whenever one of `paths` changes. The files are
    /// first looked at now: what they are at this call is not a change.
    pub fn on_change<F, Fut>(mut self, paths: &[PathBuf], mut on_change: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.groups.push(Group {
            paths: paths.to_vec(),
            seen: paths.iter().map(|p| stamp(p)).collect(),
            on_change: Box::new(move || Box::pin(on_change())),
        });
        self
    }

    /// Watches until `stop`: after change events (debounced) and every `fallback`, calls the
    /// callback of each group whose files changed.
    pub async fn run(mut self, fallback: Duration, stop: CancellationToken) {
        if self.groups.is_empty() {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let dirs = self.dirs();
        let _watcher = match start(&dirs, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dirs = ?dirs, error = %e, "cannot watch for changes; looking every {fallback:?}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(fallback) => {}
            }
            for group in &mut self.groups {
                if group.changed() {
                    (group.on_change)().await;
                }
            }
        }
    }

    /// The directories holding the watched files, each once.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in self.groups.iter().flat_map(|g| &g.paths) {
            let dir = parent_dir(p);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }
}

fn start(dirs: &[PathBuf], tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending wake-up; dropping this one is fine.
            let _ = tx.try_send(());
        }
    })?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;
