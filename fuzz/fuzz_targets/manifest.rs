//! Fuzzes manifest/index parsing (used to walk images): lenient but never panicking.
#![no_main]
use ferry_oci::manifest::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data, None);
});
