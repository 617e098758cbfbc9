//! Fuzzes `Range` header parsing: no panics, and accepted ranges lie inside the blob.
#![no_main]
use ferry_oci::range::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    if let Ok(r) = parse(header, size) {
        assert!(r.start <= r.end && r.end < size);
    }
});
