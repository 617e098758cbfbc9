//! Fuzzes full image references: no panics, and the canonical form parses back to itself.
#![no_main]
use ferry_oci::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = ImageRef::parse(s) {
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
    }
});
