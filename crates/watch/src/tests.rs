//! The watcher calls each group's callback once per change of its own files, sees a
//! Kubernetes-style symlink swap, ignores a missing file, and stops when cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn counter() -> (
    Arc<AtomicUsize>,
    impl FnMut() -> std::future::Ready<()> + Send + 'static,
) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, move || {
        m.fetch_add(1, Ordering::SeqCst);
        std::future::ready(())
    })
}

async fn wait_for(n: &AtomicUsize, want: usize) {
    for _ in 0..100 {
        if n.load(Ordering::SeqCst) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "callback ran {} times, want {want}",
        n.load(Ordering::SeqCst)
    );
}

/// Long enough that only change events (not the fallback look) explain a call.
const NO_FALLBACK: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn each_group_hears_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cert) = (dir.path().join("config.yaml"), dir.path().join("tls.crt"));
    std::fs::write(&config, "a").unwrap();
    std::fs::write(&cert, "c").unwrap();
    let (configs, on_config) = counter();
    let (certs, on_cert) = counter();
    let watch = FileWatch::new()
        .on_change(std::slice::from_ref(&config), on_config)
        .on_change(std::slice::from_ref(&cert), on_cert);
    let stop = CancellationToken::new();
    let task = tokio::spawn(watch.run(NO_FALLBACK, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    std::fs::write(&config, "ab").unwrap();
    wait_for(&configs, 1).await;
    std::fs::write(&cert, "cd").unwrap();
    wait_for(&certs, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(configs.load(Ordering::SeqCst), 1, "one change, one call");
    assert_eq!(certs.load(Ordering::SeqCst), 1);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops when cancelled")
        .unwrap();
}

#[tokio::test]
async fn a_swapped_symlink_is_a_change_and_a_missing_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    // Same size, different content, as a rotated ConfigMap often is.
    std::fs::write(v1.join("config.yaml"), "aaaa").unwrap();
    std::fs::write(v2.join("config.yaml"), "bbbb").unwrap();
    let data = dir.path().join("..data");
    std::os::unix::fs::symlink(&v1, &data).unwrap();
    let config = dir.path().join("config.yaml");
    std::os::unix::fs::symlink("..data/config.yaml", &config).unwrap();
    let (calls, on_change) = counter();
    let watch = FileWatch::new().on_change(std::slice::from_ref(&config), on_change);
    let stop = CancellationToken::new();
    tokio::spawn(watch.run(Duration::from_millis(100), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing changed yet");

    let next = dir.path().join("..data_next");
    std::os::unix::fs::symlink(&v2, &next).unwrap();
    std::fs::rename(&next, &data).unwrap();
    wait_for(&calls, 1).await;

    std::fs::remove_file(&config).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a missing file is no change"
    );
    std::os::unix::fs::symlink("..data/config.yaml", &config).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "back as it was before it went missing: no change either"
    );
    stop.cancel();
}
