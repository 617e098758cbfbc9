use super::*;

fn requests(n: u64) -> Sample {
    Sample {
        requests: n,
        ..Sample::default()
    }
}

const T0: u64 = 1_800_000_000; // a multiple of 3600

#[test]
fn samples_in_one_minute_share_a_bucket() {
    let mut s = Series::default();
    s.record(T0 + 5, &requests(2));
    s.record(T0 + 59, &requests(3));
    s.record(T0 + 60, &requests(4));
    let p = s.points(Window::Hour, T0 + 60);
    assert_eq!(p.len(), 60);
    assert_eq!(p[58].start, T0);
    assert_eq!(p[58].sample.requests, 5);
    assert_eq!(p[59].sample.requests, 4);
    let day = s.points(Window::Day, T0 + 60);
    assert_eq!(day.last().unwrap().sample.requests, 9);
    assert_eq!(day.last().unwrap().start, T0);
}

#[test]
fn old_buckets_roll_out_and_gaps_are_zero() {
    let mut s = Series::default();
    s.record(T0, &requests(1));
    s.record(T0 + 30 * 60, &requests(2));
    let p = s.points(Window::Hour, T0 + 30 * 60);
    assert_eq!(p.iter().map(|p| p.sample.requests).sum::<u64>(), 3);
    assert_eq!(p.iter().filter(|p| p.sample.requests == 0).count(), 58);
    // 61 minutes later the first sample left the hour, but not the day.
    s.record(T0 + 61 * 60, &requests(0));
    let p = s.points(Window::Hour, T0 + 61 * 60);
    assert_eq!(p.iter().map(|p| p.sample.requests).sum::<u64>(), 2);
    let d = s.points(Window::Day, T0 + 61 * 60);
    assert_eq!(d.iter().map(|p| p.sample.requests).sum::<u64>(), 3);
}

#[test]
fn memory_is_bounded_by_the_bucket_counts() {
    let mut s = Series::default();
    // Two weeks of one sample every 10 s.
    for i in 0..(14 * 24 * 360) {
        s.record(T0 + i * 10, &requests(1));
    }
    assert!(s.len() <= 60 + 288 + 168, "{}", s.len());
    let now = T0 + 14 * 24 * 3600 - 10;
    let w = s.points(Window::Week, now);
    assert_eq!(w.len(), 168);
    // Every full hour of the week holds 360 samples.
    assert!(w[..167].iter().all(|p| p.sample.requests == 360));
}

#[test]
fn maxima_and_means_are_kept() {
    let mut s = Series::default();
    let cold = |ms| Sample {
        cold_count: 1,
        cold_ms_sum: ms,
        cold_ms_max: ms,
        hits: 3,
        misses: 1,
        ..Sample::default()
    };
    s.record(T0, &cold(100));
    s.record(T0 + 10, &cold(300));
    let p = s.points(Window::Hour, T0 + 10).pop().unwrap().sample;
    assert_eq!(p.cold_ms_max, 300);
    assert_eq!(p.cold_ms_mean(), Some(200.0));
    assert_eq!(p.hit_ratio(), Some(0.75));
    assert_eq!(Sample::default().hit_ratio(), None);
}

#[test]
fn saved_series_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.json");
    let mut s = Series::default();
    s.record(T0, &requests(7));
    s.record(T0 + 3600, &requests(8));
    s.save(&path).unwrap();
    assert!(!path.with_extension("json.tmp").exists());
    let back = Series::load(&path, T0 + 3600).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        back.points(Window::Week, T0 + 3600)
            .iter()
            .map(|p| p.sample.requests)
            .sum::<u64>(),
        15
    );
    // Read back much later: everything left the windows.
    assert!(Series::load(&path, T0 + 30 * 24 * 3600).unwrap().is_empty());
}

#[test]
fn a_missing_file_is_empty_and_a_corrupt_one_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.json");
    assert!(Series::load(&path, T0).unwrap().is_empty());
    std::fs::write(&path, b"{\"hour\": [1, 2").unwrap();
    let e = Series::load(&path, T0).unwrap_err();
    assert!(matches!(e, LoadError::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("not a saved time series"), "{e}");
}

#[test]
fn windows_parse() {
    for w in Window::ALL {
        assert_eq!(Window::parse(w.as_str()), Some(w));
        assert_eq!(w.step() * w.buckets() as u64 % 3600, 0);
    }
    assert_eq!(Window::parse("2h"), None);
}
