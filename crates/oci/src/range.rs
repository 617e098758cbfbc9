//! The `Range` header of blob GETs: one range of the `bytes` unit.
//!
//! Forms: `bytes=a-b`, `bytes=a-` (to the end), `bytes=-n` (the last n bytes). ferry answers
//! one range with 206; a malformed, multi-part or unsatisfiable range gets 416 with
//! `Content-Range: bytes */<size>`.

/// An inclusive byte range inside a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for a blob of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// Why a range cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not of the form `bytes=a-b`, or several ranges.
    #[error("malformed or multi-part Range header {0:?}")]
    Malformed(String),
    /// Starts at or after the end of the blob.
    #[error("range {0:?} is outside the blob of {1} bytes")]
    Unsatisfiable(String, u64),
}

/// Parses a `Range` header value against a blob of `size` bytes.
pub fn parse(header: &str, size: u64) -> Result<ByteRange, RangeError> {
    let malformed = || RangeError::Malformed(header.chars().take(80).collect());
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(malformed)?
        .trim();
    if spec.contains(',') {
        return Err(malformed());
    }
    let (a, b) = spec.split_once('-').ok_or_else(malformed)?;
    let num = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let unsatisfiable = || RangeError::Unsatisfiable(header.chars().take(80).collect(), size);
    let range = if a.is_empty() {
        let n = num(b)?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }
    } else {
        let start = num(a)?;
        let end = if b.is_empty() { u64::MAX } else { num(b)? };
        if end < start {
            return Err(malformed());
        }
        if start >= size {
            return Err(unsatisfiable());
        }
        ByteRange {
            start,
            end: end.min(size - 1),
        }
    };
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-9", 100), Ok(ByteRange { start: 0, end: 9 }));
        assert_eq!(
            parse("bytes=90-", 100),
            Ok(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse("bytes=-10", 100),
            Ok(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse("bytes=-1000", 100),
            Ok(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse("bytes=50-5000", 100),
            Ok(ByteRange { start: 50, end: 99 })
        );
        assert_eq!(
            parse("bytes=0-9", 100).unwrap().content_range(100),
            "bytes 0-9/100"
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=a-b",
            "items=0-1",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=-",
        ] {
            assert!(
                matches!(parse(bad, 100), Err(RangeError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("bytes=100-", 100),
            Err(RangeError::Unsatisfiable(..))
        ));
        assert!(matches!(
            parse("bytes=-0", 100),
            Err(RangeError::Unsatisfiable(..))
        ));
        assert!(matches!(
            parse("bytes=0-0", 0),
            Err(RangeError::Unsatisfiable(..))
        ));
    }

    proptest! {
        #[test]
        fn ranges_stay_inside(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let Ok(r) = parse(&h, size) {
                prop_assert!(r.start <= r.end && r.end < size);
            }
        }

        #[test]
        fn never_panics(h in ".{0,60}", size in any::<u64>()) {
            let _ = parse(&h, size);
        }
    }
}
