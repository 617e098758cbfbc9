//! Tests of tier compilation, admission order and the over-quota messages.

use super::*;
use ferry_config::access::QuotaTier;

fn tier(t: QuotaTier) -> Arc<Tier> {
    Tier::compile("anonymous quota".into(), &t).unwrap()
}

fn rate(s: &str) -> Option<Rate> {
    Some(Rate::parse(s).unwrap())
}

#[test]
fn unlimited_tiers_compile_to_nothing() {
    assert!(Tier::compile("x".into(), &QuotaTier::default()).is_none());
    let t = QuotaTier {
        requests: rate("unlimited"),
        ..Default::default()
    };
    assert!(Tier::compile("x".into(), &t).is_none());
}

#[test]
fn user_overrides_lay_over_authenticated() {
    let mut cfg = QuotasConfig {
        authenticated: QuotaTier {
            requests: rate("600/1m"),
            concurrent: Some(50),
            ..Default::default()
        },
        ..Default::default()
    };
    cfg.users.insert(
        "ci-bot".into(),
        QuotaTier {
            bytes: rate("500GiB/1h"),
            ..Default::default()
        },
    );
    cfg.users.insert(
        "root".into(),
        QuotaTier {
            requests: rate("unlimited"),
            ..Default::default()
        },
    );
    let tiers = Tiers::new(&cfg);
    let bot = tiers.user("ci-bot").unwrap();
    assert_eq!(bot.concurrent, Some(50));
    assert_eq!(bot.requests.as_ref().unwrap().amount, 600);
    assert_eq!(bot.bytes.as_ref().unwrap().amount, 500 << 30);
    assert_eq!(bot.label, "quota of user ci-bot");
    assert!(tiers.user("alice").unwrap().bytes.is_none());
    assert!(tiers.user("root").unwrap().requests.is_none());
    assert!(tiers.anonymous().is_none());
}

#[test]
fn keys_carry_the_limit_and_a_cluster_hash_tag() {
    let l = Limit::from_rate(rate("20/1m")).unwrap();
    assert_eq!(l.key("req", "ip 1.2.3.4"), "req:20/60000:{ip 1.2.3.4}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_takes_no_slot_and_no_quota() {
    let store = Store::Local(Arc::new(LocalStore::default()));
    let conc = Arc::new(Concurrency::default());
    let t = tier(QuotaTier {
        requests: rate("1/1m"),
        concurrent: Some(1),
        ..Default::default()
    });
    let first = admit(&store, &conc, &t, "ip 1.2.3.4").await.unwrap();
    let busy = admit(&store, &conc, &t, "ip 1.2.3.4").await.unwrap_err();
    assert_eq!(busy.reason, reason::CONCURRENCY);
    assert!(
        busy.message
            .contains("may have 1 at once (anonymous quota)"),
        "{}",
        busy.message
    );
    drop(first);
    let d = admit(&store, &conc, &t, "ip 1.2.3.4").await.unwrap_err();
    assert_eq!(d.reason, reason::QUOTA_REQUESTS);
    assert_eq!(
        conc.in_flight("ip 1.2.3.4"),
        0,
        "the slot of a refused request is given back"
    );
    assert_eq!(
        d.message,
        "too many requests: ip 1.2.3.4 may make 1 requests per 1m (anonymous quota); retry in 1m"
    );
    assert_eq!(d.retry_after_secs(), Some(60));
}

#[tokio::test(start_paused = true)]
async fn over_bytes_refuses_before_counting_the_request() {
    let store = Store::Local(Arc::new(LocalStore::default()));
    let conc = Arc::new(Concurrency::default());
    let t = tier(QuotaTier {
        requests: rate("2/1m"),
        bytes: rate("1KiB/1h"),
        ..Default::default()
    });
    store.run(&debits(&t, "s", 4096, false, 0)).await;
    let d = admit(&store, &conc, &t, "s").await.unwrap_err();
    assert_eq!(d.reason, reason::QUOTA_BYTES);
    assert!(
        d.message
            .starts_with("download quota used up: s may download 1KiB per 1h"),
        "{}",
        d.message
    );
    assert!(d.retry_after.unwrap() > Duration::from_secs(3 * 3600 - 5));
    tokio::time::advance(Duration::from_secs(4 * 3600)).await;
    admit(&store, &conc, &t, "s").await.unwrap();
    admit(&store, &conc, &t, "s").await.unwrap();
    assert_eq!(
        admit(&store, &conc, &t, "s").await.unwrap_err().reason,
        reason::QUOTA_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn miss_quotas_are_reported_aside() {
    let store = Store::Local(Arc::new(LocalStore::default()));
    let conc = Arc::new(Concurrency::default());
    let t = tier(QuotaTier {
        miss_requests: rate("1/1h"),
        ..Default::default()
    });
    assert!(
        admit(&store, &conc, &t, "s")
            .await
            .unwrap()
            .miss_denial
            .is_none()
    );
    store.run(&debits(&t, "s", 10, true, 1)).await;
    let adm = admit(&store, &conc, &t, "s").await.unwrap();
    assert_eq!(adm.miss_denial.unwrap().reason, reason::QUOTA_MISS_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn throttle_spreads_bytes_over_time() {
    let local = LocalStore::default();
    let t = tier(QuotaTier {
        bandwidth: rate("1MiB/s"),
        ..Default::default()
    });
    assert!(
        throttle(&local, &t, "s", 64 << 10).is_zero(),
        "a short burst passes at once"
    );
    let wait = throttle(&local, &t, "s", 1 << 20);
    let expected = 1.0 + 1.0 / 16.0 - 0.1;
    assert!((wait.as_secs_f64() - expected).abs() < 0.01, "{wait:?}");
}

#[tokio::test(start_paused = true)]
async fn reservations_admit_one_overrun_and_refunds_give_back_the_rest() {
    let store = Store::Local(Arc::new(LocalStore::default()));
    let t = tier(QuotaTier {
        bytes: rate("30MiB/1h"),
        miss_bytes: rate("100MiB/1h"),
        ..Default::default()
    });
    let mib = 1 << 20;
    reserve(&store, &t, "s", 20 * mib, true).await.unwrap();
    reserve(&store, &t, "s", 20 * mib, true).await.unwrap();
    let d = reserve(&store, &t, "s", 20 * mib, false).await.unwrap_err();
    assert_eq!(d.reason, reason::QUOTA_BYTES);
    // The second download stopped after 5 MiB: its 15 unsent MiB come back (25 of 30 used),
    // so one more download starts, and overruns by 1 MiB.
    store.run(&refunds(&t, "s", 15 * mib, true)).await;
    reserve(&store, &t, "s", 6 * mib, false).await.unwrap();
    assert!(reserve(&store, &t, "s", mib, false).await.is_err());
}
