//! The object-store key layout, relative to the configured prefix:
//!
//! ```text
//! blobs/<algorithm>/<first two hex digits>/<hex>   blob and manifest bytes (as on disk)
//! meta/<key>                                       metadata documents (as on disk)
//! _access/<algorithm>/<hex>/<microseconds>         empty marker: when the blob was last served
//! _locks/<algorithm>/<hex>                         fill claim of one replica (JSON, expiring)
//! _probe/<random>                                  writability and capability probes
//! ```
//!
//! Blob and metadata keys are the local-disk paths (see [`crate::paths`]), so a store can be
//! copied between backends with ordinary tools. Objects cannot change their modification time,
//! so the last access of a blob is an empty marker whose *name* holds the time: listing
//! `_access/` gives every access time without reading a single object.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_oci::Digest;

use crate::{Result, check_key};

/// Key of a blob.
pub fn blob(d: &Digest) -> String {
    let hex = d.hex();
    format!("blobs/{}/{}/{}", d.algorithm().as_str(), &hex[..2], hex)
}

/// Directory of all blobs.
pub const BLOBS: &str = "blobs/";

/// Directory of metadata documents.
pub const META: &str = "meta/";

/// Directory of access markers.
pub const ACCESS: &str = "_access/";

/// Key of a metadata document, after checking that `key` stays inside `meta/`.
pub fn meta(key: &str) -> Result<String> {
    check_key(key)?;
    Ok(format!("{META}{key}"))
}

/// Directory of one blob's access markers.
pub fn access_dir(d: &Digest) -> String {
    format!("{ACCESS}{}/{}/", d.algorithm().as_str(), d.hex())
}

/// Key of an access marker for `when`.
pub fn access_marker(d: &Digest, when: SystemTime) -> String {
    format!("{}{}", access_dir(d), micros(when))
}

/// Key of a blob's fill claim through `source` (an upstream name; characters other than
/// `[a-z0-9.-]` become `_`).
pub fn lock(source: &str, d: &Digest) -> String {
    let source: String = source
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("_locks/{source}/{}/{}", d.algorithm().as_str(), d.hex())
}

/// A fresh probe key.
pub fn probe() -> String {
    format!("_probe/{:016x}", rand::random::<u64>())
}

/// The digest of a key under `blobs/`.
pub fn parse_blob(key: &str) -> Option<Digest> {
    let mut parts = key.strip_prefix(BLOBS)?.split('/');
    let (algo, _shard, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Digest::parse(&format!("{algo}:{hex}")).ok()
}

/// The digest and time of an access marker key.
pub fn parse_access(key: &str) -> Option<(Digest, SystemTime)> {
    let mut parts = key.strip_prefix(ACCESS)?.split('/');
    let (algo, hex, t) = (parts.next()?, parts.next()?, parts.next()?);
    let d = Digest::parse(&format!("{algo}:{hex}")).ok()?;
    let t: u64 = t.parse().ok()?;
    Some((d, UNIX_EPOCH + std::time::Duration::from_micros(t)))
}

/// Microseconds since the epoch.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(parse_blob(&blob(&d)), Some(d.clone()));
        assert!(blob(&d).starts_with(&format!("blobs/sha256/{}/", &d.hex()[..2])));
        let when = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(parse_access(&access_marker(&d, when)), Some((d, when)));
        assert!(parse_blob("blobs/sha256/zz").is_none());
        assert!(meta("../x").is_err());
    }
}
