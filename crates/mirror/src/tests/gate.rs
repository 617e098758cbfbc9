//! The miss gate is asked exactly where a request would start an upstream fetch: never for
//! what the shared store holds (whichever replica stored it), never to join a download in
//! flight; a refusal fetches nothing.

use std::sync::atomic::AtomicUsize;

use super::*;

/// A gate that refuses every miss and counts how often it was asked.
#[derive(Default)]
struct Refuse {
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl MissGate for Refuse {
    async fn admit_miss(&self) -> std::result::Result<(), MissRefused> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Err(MissRefused("quota used up".into()))
    }
}

impl Refuse {
    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// A second engine over the same store directory and upstream as `env`'s: another replica.
async fn other_replica(env: &Env) -> Mirror {
    let config = Config::from_yaml(&env.config, Vec::new()).unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(&env.root).unwrap());
    Mirror::start(&config, store, Arc::new(Metrics::new()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_blob_another_replica_stored_is_a_hit_and_no_miss() {
    let env = env_with("").await;
    let (d, data) = add_blob(&env.fake, 200_000, 3);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let other = other_replica(&env).await;
    let ot = other.resolve("org/app", None, None).unwrap();
    let fetched = other.blob(&ot, &d, None, Delivery::Stream, &Ungated).await;
    read_all(fetched.unwrap()).await.unwrap();
    assert!(other.settle_blob(&d).await);
    assert!(
        !env.mirror.index().contains(&d),
        "this replica's index has not seen the blob"
    );

    let gate = Refuse::default();
    let a = env.mirror.blob(&t, &d, None, Delivery::Stream, &gate).await;
    let a = a.expect("served from the shared store");
    assert_eq!(a.outcome, Outcome::Hit);
    assert!(read_all(a).await.unwrap() == data);
    assert_eq!(gate.asked(), 0, "a stored blob is no miss");
    assert_eq!(
        env.fake.hits("GET", &d.to_string()),
        1,
        "fetched once, by the other"
    );
}

#[tokio::test]
async fn a_manifest_another_replica_stored_is_a_hit_and_no_miss() {
    let env = env_with("").await;
    let d = add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let other = other_replica(&env).await;
    let ot = other.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    other.manifest(&ot, &tag, &Ungated).await.unwrap();

    let gate = Refuse::default();
    let by_tag = env.mirror.manifest(&t, &tag, &gate).await.unwrap();
    assert_eq!(by_tag.outcome, Outcome::Hit);
    let by_digest = Reference::Digest(d.clone());
    let a = env.mirror.manifest(&t, &by_digest, &gate).await.unwrap();
    assert_eq!(a.outcome, Outcome::Hit);
    assert_eq!(gate.asked(), 0, "stored manifests are no miss");
    assert_eq!(
        env.fake.hits("GET", "/manifests/v1"),
        1,
        "fetched once, by the other"
    );
}

#[tokio::test]
async fn a_refused_miss_fetches_nothing() {
    let env = env_with("").await;
    let (d, _) = add_blob(&env.fake, 1000, 4);
    let m = add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let gate = Refuse::default();

    let blob = env.mirror.blob(&t, &d, None, Delivery::Stream, &gate).await;
    assert!(matches!(blob.err().unwrap(), MirrorError::MissRefused(_)));
    let tag = Reference::parse("v1").unwrap();
    let by_tag = env.mirror.manifest(&t, &tag, &gate).await.unwrap_err();
    assert!(matches!(by_tag, MirrorError::MissRefused(_)));
    let by_digest = Reference::Digest(m.clone());
    let by_digest = env
        .mirror
        .manifest(&t, &by_digest, &gate)
        .await
        .unwrap_err();
    assert!(matches!(by_digest, MirrorError::MissRefused(_)));

    assert_eq!(gate.asked(), 3);
    assert_eq!(env.fake.hits("GET", &d.to_string()), 0);
    assert_eq!(env.fake.hits("GET", "/manifests/v1"), 0);
    assert_eq!(env.fake.hits("GET", &m.to_string()), 0);
    assert_eq!(env.mirror.inflight(), 0, "no download was started");
}

#[tokio::test]
async fn joining_a_download_in_flight_is_no_new_miss() {
    let env = env_with("").await;
    env.fake.set_slow(Duration::from_millis(20));
    let (d, data) = add_blob(&env.fake, 1024 * 1024, 5);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let first = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await;
    let first = first.unwrap();
    assert_eq!(env.mirror.inflight(), 1);

    let gate = Refuse::default();
    let joined = env.mirror.blob(&t, &d, None, Delivery::Stream, &gate).await;
    let joined = joined.expect("joins the download");
    assert_eq!(gate.asked(), 0);
    assert!(read_all(joined).await.unwrap() == data);
    assert!(read_all(first).await.unwrap() == data);
    assert_eq!(env.fake.hits("GET", &d.to_string()), 1);
}
