//! Runs a reload callback when files in some directories change.
//!
//! Directories, not files, are watched: Kubernetes updates a mounted ConfigMap or Secret by
//! writing a new timestamped directory and renaming the `..data` symlink over the old one, so
//! the file's own inode never changes and a watch on it would miss the update. Events are
//! debounced (a rotation touches several entries), and the callback also runs every
//! `fallback` interval in case events are lost (some network and overlay filesystems drop them).
//! Callbacks compare file contents themselves, so a spurious call costs one read.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long to wait after an event for the rest of a burst.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Calls `reload` after changes in `dirs` and every `fallback`, until `cancel`.
pub async fn on_change(
    dirs: Vec<PathBuf>,
    fallback: Duration,
    cancel: CancellationToken,
    mut reload: impl FnMut(),
) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let _watcher = match start(&dirs, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dirs = ?dirs, error = %e, "cannot watch for changes; polling every {fallback:?}");
            None
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(fallback) => {}
        }
        reload();
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
pub fn parent_dir(path: &std::path::Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
