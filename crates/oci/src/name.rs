//! Repository names, validated against the OCI distribution grammar:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
//!
//! A valid name can never hold `..`, an empty component, `%` or a leading `/`, so it is safe to
//! use as a relative path under a cache root.

use std::fmt;

/// The longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// A repository path such as `library/nginx` or `org/team/app`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// Why a string is not a repository name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("repository name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A component breaks the grammar.
    #[error(
        "invalid repository name component {0:?}: use lower-case letters, digits and single separators (. _ __ -)"
    )]
    BadComponent(String),
}

impl RepoName {
    /// Validates `s` as a repository name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !is_component(component) {
                return Err(NameError::BadComponent(
                    component.chars().take(80).collect(),
                ));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Number of path components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// `library/<name>` for a one-component name (Docker Hub's official images), else itself.
    /// Fails when the prefix makes the name longer than [`MAX_NAME_LEN`].
    pub fn with_library_prefix(self) -> Result<Self, NameError> {
        if self.depth() == 1 {
            RepoName::parse(&format!("library/{}", self.0))
        } else {
            Ok(self)
        }
    }
}

/// Whether `c` is one path component of the grammar.
pub fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", always followed by alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "library/nginx",
            "a/b/c/d/e",
            "my-org/my--app",
            "x.y_z__w",
            "0/1",
            "ghcr.io",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} rejected");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "A",
            "a b",
            "a%2fb",
            "a___b",
            "-a",
            "a-",
            "a..b",
            "a._b",
            "localhost:5000/a",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(RepoName::parse(&"a".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn library_prefix_only_for_one_component() {
        let n = RepoName::parse("busybox")
            .unwrap()
            .with_library_prefix()
            .unwrap();
        assert_eq!(n.as_str(), "library/busybox");
        let n = RepoName::parse("org/app")
            .unwrap()
            .with_library_prefix()
            .unwrap();
        assert_eq!(n.as_str(), "org/app");
        let long = RepoName::parse(&"a".repeat(250)).unwrap();
        assert_eq!(long.with_library_prefix(), Err(NameError::TooLong));
        assert_eq!(n.as_str(), "org/app");
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = RepoName::parse(&s);
        }

        #[test]
        fn valid_names_are_safe_relative_paths(s in "[a-z0-9._/-]{1,60}") {
            if let Ok(n) = RepoName::parse(&s) {
                for c in n.components() {
                    prop_assert!(c != "." && c != ".." && !c.is_empty());
                }
                prop_assert!(!n.as_str().starts_with('/'));
            }
        }

        #[test]
        fn grammar_generated_names_are_accepted(
            parts in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,3}", 1..6)
        ) {
            let s = parts.join("/");
            prop_assert!(RepoName::parse(&s).is_ok(), "{} rejected", s);
        }
    }
}
