//! Reload.

use super::*;

/// SIGHUP makes ferry read a changed upstream: the next revalidation goes to the new registry
/// and the old one hears nothing more. (The file is swapped so that the watcher cannot see it:
/// this is the signal alone.)
#[test]
fn sighup_switches_to_a_changed_upstream() {
    let (a, da, b, db) = two_upstreams();
    let (builder, mut ferry) = start_for_sighup(&a);
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    replace_config_unnoticed(&ferry, &builder.upstream("docker.io", &b));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the reload", || {
        ferry.stderr().contains("configuration reloaded")
    });
    let a_seen = a.requests().len();
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), db);
    assert_eq!(a.requests().len(), a_seen, "the old upstream is not asked");
    assert!(
        !ferry.stderr().contains("configuration file changed"),
        "the signal, not the watcher, reloaded:\n{}",
        ferry.stderr()
    );
}

/// SIGHUP with a broken file: ferry logs why, keeps its old config (nothing of the broken file
/// applies, not even its valid parts) and keeps serving and ready.
#[test]
fn sighup_with_a_broken_config_keeps_serving() {
    let (a, da, b, _) = two_upstreams();
    let (builder, mut ferry) = start_for_sighup(&a);
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    let broken = builder
        .upstream("docker.io", &b)
        .set("cache.no_such_key", true);
    replace_config_unnoticed(&ferry, &broken);
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the refusal", || {
        ferry.stderr().contains("configuration NOT reloaded")
    });
    assert!(
        ferry.stderr().contains("no_such_key"),
        "the log says why:\n{}",
        ferry.stderr()
    );
    assert!(ferry.is_running());
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    assert_eq!(b.requests().len(), 0, "nothing of the broken file applies");
    assert_eq!(raw_get(&ferry.host(), "/readyz").unwrap().status, 200);
}

/// Builds the layout kubelet gives a mounted ConfigMap: `<dir>/ferry.yaml -> ..data/ferry.yaml`
/// and `..data -> ..<version>`, where a new version is swapped in with one atomic rename.
struct ConfigMapDir {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: &Path) -> ConfigMapDir {
        std::fs::create_dir_all(dir).unwrap();
        ConfigMapDir {
            dir: dir.to_owned(),
            version: 0,
        }
    }

    /// Publishes a new version of the file; its modification time can be forced, so that only
    /// the symlink target differs from the previous version.
    fn publish(&mut self, text: &str, mtime: Option<SystemTime>) -> PathBuf {
        self.version += 1;
        let versioned = self.dir.join(format!("..v{}", self.version));
        std::fs::create_dir(&versioned).unwrap();
        let file = versioned.join("ferry.yaml");
        std::fs::write(&file, text).unwrap();
        if let Some(t) = mtime {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{}", self.version), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        file
    }
}

/// Without any signal: ferry reloads when its config file is rewritten in place, when the file
/// becomes a kubelet-style symlink, and when a ConfigMap update swaps the `..data` symlink (even
/// with the same size and modification time); a broken version is refused and the last good
/// one kept.
#[test]
fn config_file_changes_reload_without_a_signal() {
    let (a, da, b, db) = two_upstreams();
    let builder = Ferry::builder()
        .upstream("docker.io", &a)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking");
    let mut ferry = builder.clone().start();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    let reloads = |f: &Ferry| count(&f.stderr(), "configuration reloaded");
    let wait_reload = |f: &Ferry, before: usize, what: &str| {
        wait_until(Duration::from_secs(15), what, || reloads(f) > before);
    };

    // 1. The file rewritten in place.
    let n = reloads(&ferry);
    ferry.update_config(|c| c.upstream("docker.io", &b));
    wait_reload(&ferry, n, "a reload after an in-place rewrite");
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), db);

    // 2. The same content, now behind kubelet's symlinks.
    let render = |c: FerryBuilder| c.render(&ferry.host(), ferry.data_dir());
    let mut cm = ConfigMapDir::new(&ferry.dir().join("configmap"));
    let v1 = cm.publish(&render(builder.clone().upstream("docker.io", &b)), None);
    let n = reloads(&ferry);
    let link = ferry.dir().join("ferry.yaml.link");
    std::os::unix::fs::symlink("configmap/..data/ferry.yaml", &link).unwrap();
    std::fs::rename(&link, ferry.config_path()).unwrap();
    wait_reload(&ferry, n, "a reload after the file became a symlink");

    // 3. A ConfigMap update: same size and modification time, another ..data target.
    let mut text_a = render(builder.clone());
    let len_b = std::fs::metadata(&v1).unwrap().len() as usize;
    while text_a.len() < len_b {
        text_a.push('\n');
    }
    assert_eq!(text_a.len(), len_b, "upstream URLs of equal length");
    let mtime = std::fs::metadata(&v1).unwrap().modified().unwrap();
    let n = reloads(&ferry);
    cm.publish(&text_a, Some(mtime));
    wait_reload(&ferry, n, "a reload after the ..data swap");
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    // 4. A broken version: refused, the last good config stays.
    let refusals = count(&ferry.stderr(), "configuration NOT reloaded");
    cm.publish("listen: [broken\n", None);
    wait_until(Duration::from_secs(15), "the refusal", || {
        count(&ferry.stderr(), "configuration NOT reloaded") > refusals
    });
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    assert!(ferry.is_running());
}

/// A reload in the middle of a download does not disturb it: the body completes, verified, from
/// the upstream it started on, and the blob is cached (the new upstream is never asked for it).
#[test]
fn a_download_in_flight_survives_a_reload() {
    let size = 4 * MIB;
    let SlowDownload {
        up: a,
        blob,
        mut ferry,
        path,
        download,
        ..
    } = SlowDownload::start(41, size, MIB, "30s", 256 * 1024);
    let b = FaultyUpstream::start();
    ferry.update_config(|c| c.upstream("docker.io", &b).tag_ttl("5s"));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the reload", || {
        ferry.stderr().contains("configuration reloaded")
    });
    assert!(
        download.received() < size,
        "the reload happened while the download was in flight"
    );
    download.finish_whole(&blob);
    assert_eq!(a.blob_gets(&blob), 1, "the download was not restarted");

    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(b.blob_gets(&blob), 0, "served from the cache");
}
