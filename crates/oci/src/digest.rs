//! Content digests (`<algorithm>:<hex>`) and their streaming verification.
//!
//! ferry only stores content whose digest it can check, so only the two algorithms of the OCI
//! image spec that registries use are accepted: `sha256` (64 hex digits) and `sha512`
//! (128 hex digits), always lower-case. Anything else is `DIGEST_INVALID` at the edge.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A hash algorithm ferry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm of practically every image.
    Sha256,
    /// SHA-512, allowed by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:9f86d0...`.
///
/// The string form is kept whole so that formatting and hashing are free.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

/// Why a string is not a digest ferry accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `:` between algorithm and encoded part.
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<64 hex digits>)")]
    MissingAlgorithm(String),
    /// An algorithm other than sha256/sha512.
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    /// Wrong length or a character that is not a lower-case hex digit.
    #[error("digest {0:?} is malformed: expected {1} lower-case hex digits")]
    BadEncoding(String, usize),
}

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(truncate(s)));
        };
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(truncate(other))),
        };
        let well_formed = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::BadEncoding(truncate(s), algorithm.hex_len()));
        }
        Ok(Digest {
            text: s.to_owned(),
            algorithm,
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut v = DigestVerifier::new(Algorithm::Sha256);
        v.update(bytes);
        v.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest string.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream past and yields their [`Digest`].
#[derive(Clone)]
pub enum DigestVerifier {
    /// A running SHA-256.
    Sha256(sha2::Sha256),
    /// A running SHA-512.
    Sha512(sha2::Sha512),
}

impl DigestVerifier {
    /// A verifier for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestVerifier::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestVerifier::Sha512(sha2::Sha512::new()),
        }
    }

    /// A verifier of the same algorithm as `expected`.
    pub fn for_digest(expected: &Digest) -> Self {
        Self::new(expected.algorithm())
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestVerifier::Sha256(h) => h.update(bytes),
            DigestVerifier::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestVerifier::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            DigestVerifier::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            text: format!("{}:{}", algorithm.as_str(), hex),
            algorithm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_computes_sha256() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:abcd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd",
            &EMPTY[..70],
            &format!("{EMPTY}0"),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sha512_round_trip() {
        let mut v = DigestVerifier::new(Algorithm::Sha512);
        v.update(b"abc");
        let d = v.finish();
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.hex().len(), 128);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = Digest::parse(&s);
        }

        #[test]
        fn computed_digests_parse(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = Digest::sha256_of(&data);
            prop_assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        }

        #[test]
        fn accepted_digests_are_path_safe(s in "[a-z0-9:./]{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert!(!d.hex().contains('/') && !d.hex().contains('.'));
            }
        }
    }
}
