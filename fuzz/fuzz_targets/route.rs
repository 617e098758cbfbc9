//! Fuzzes the `/v2/...` path parser: it must never panic, and an accepted name must be a safe
//! relative path (no empty, `.` or `..` components, no `%`).
#![no_main]
use ferry_oci::route::{Route, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let path = format!("/v2/{s}");
    if let Ok(Route::Repo { name, .. }) = parse(&path) {
        assert!(!name.contains('%'));
        assert!(name.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
    }
});
