//! Fuzzes digest, tag, reference and repository-name parsing: no panics, and everything
//! accepted round-trips through its string form.
#![no_main]
use ferry_oci::{Digest, Reference, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s);
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.as_str(), s);
    }
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(RepoName::parse(n.as_str()).unwrap(), n);
    }
});
