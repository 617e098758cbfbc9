//! Per-process spool directories for downloads in progress, safe when several processes share
//! one cache (a `ferry serve` and a `ferry sync`, or a server restarted while the old one
//! drains).
//!
//! Each process works in `_spool/<id>/` and holds an exclusive lock on `_spool/<id>.lock` for
//! as long as it runs. At start-up a process removes only the spools whose lock nobody holds:
//! what a crashed or finished process left behind. Partial downloads of a running process are
//! never touched. The lock is taken before the directory is created, so a cleaner can never
//! remove a spool that is being set up.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// A fresh, unique spool file name in `dir`.
pub fn temp_path(dir: &Path) -> PathBuf {
    let n: u64 = rand::random();
    dir.join(format!("{n:016x}.part"))
}

/// This process's spool directory; the lock is released when the last clone is dropped.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
}

impl Spool {
    /// Cleans stale spools under `root` and claims a fresh one.
    pub fn claim(root: &Path) -> io::Result<Spool> {
        std::fs::create_dir_all(root)?;
        clean_stale(root)?;
        loop {
            let id = format!("{:016x}", rand::random::<u64>());
            let lock = File::options()
                .create(true)
                .write(true)
                .truncate(false)
                .open(root.join(format!("{id}.lock")))?;
            match lock.try_lock() {
                Ok(()) => {
                    let dir = root.join(&id);
                    std::fs::create_dir_all(&dir)?;
                    return Ok(Spool { dir, _lock: lock });
                }
                Err(TryLockError::WouldBlock) => continue, // someone else's; pick another id
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// The directory to write partial downloads into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes spools no running process holds, and stray files of older layouts.
fn clean_stale(root: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let is_lock = path.extension().is_some_and(|e| e == "lock");
        if is_lock {
            let Ok(f) = File::open(&path) else { continue };
            if f.try_lock().is_ok() {
                remove_dir_if_present(&path.with_extension(""))?;
                std::fs::remove_file(&path)?;
            }
        } else if path.is_file() {
            std::fs::remove_file(&path)?; // partial download of an older layout
        } else if !path.with_extension("lock").exists() {
            remove_dir_if_present(&path)?; // a spool whose lock file is gone
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every partial download under a spool root (for tests and diagnostics).
pub fn partial_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(partial_files(&p));
        } else if p.extension().is_some_and(|x| x == "part") {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_processes_spool_survives_another_start() {
        let root = tempfile::tempdir().unwrap();
        let first = Spool::claim(root.path()).unwrap();
        std::fs::write(first.dir().join("a.part"), b"half").unwrap();
        let second = Spool::claim(root.path()).unwrap();
        assert_ne!(first.dir(), second.dir());
        assert!(
            first.dir().join("a.part").exists(),
            "a live process's download is kept"
        );
        drop(first);
        let _third = Spool::claim(root.path()).unwrap();
        assert_eq!(
            partial_files(root.path()),
            Vec::<PathBuf>::new(),
            "a dead process's spool is removed"
        );
        assert!(second.dir().is_dir());
    }

    #[test]
    fn stray_files_and_orphan_dirs_are_removed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("old.part"), b"x").unwrap();
        std::fs::create_dir(root.path().join("orphan")).unwrap();
        std::fs::write(root.path().join("orphan/b.part"), b"x").unwrap();
        let s = Spool::claim(root.path()).unwrap();
        assert_eq!(partial_files(root.path()), Vec::<PathBuf>::new());
        assert!(s.dir().is_dir());
    }
}
