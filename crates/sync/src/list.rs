//! The sync list: which images to fetch ("what to sync"), one per line.
//!
//! ```text
//! # comments start with '#'; blank lines are ignored
//! ghcr.io/org/app:1.2                  # one tag
//! docker.io/library/nginx              # no tag: every tag of the repository
//! nginx:1.2*                           # a glob over the tag list (* ? [abc] {a,b})
//! quay.io/org/tool@sha256:<hex>        # one digest
//! registry.k8s.io/pause:3.9 linux/amd64,linux/arm64   # only these platforms of an index
//! ```
//!
//! Names follow Docker's rules ([`ImageRef`]): `nginx` is `docker.io/library/nginx`. A
//! `docker://` prefix is accepted. After the image, optional words name platforms
//! (`os/arch[/variant]`, comma-separated or several words, optionally written
//! `platform=...` or `--platform=...`).

use std::fmt;

use ferry_oci::{Digest, ImageRef, RepoName, Tag};
use globset::{Glob, GlobMatcher};

/// Which tags of a repository a line names.
#[derive(Debug, Clone)]
pub enum TagSelector {
    /// Every tag.
    All,
    /// One tag.
    Exact(Tag),
    /// Tags matching a glob.
    Pattern(TagPattern),
    /// One manifest by digest (the tag, if written too, is only informative).
    Digest(Digest),
}

/// A glob over tags, e.g. `1.2*` or `v{1,2}.*`.
#[derive(Debug, Clone)]
pub struct TagPattern {
    text: String,
    matcher: GlobMatcher,
}

impl TagPattern {
    /// Compiles a pattern.
    pub fn new(text: &str) -> Result<Self, String> {
        let bad = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.-*?[]{},!^".contains(*c)));
        if let Some(c) = bad {
            return Err(format!("tag pattern {text:?} contains {c:?}"));
        }
        let glob = Glob::new(text).map_err(|e| format!("tag pattern {text:?}: {e}"))?;
        Ok(TagPattern {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.matcher.is_match(tag)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One image line of a list.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// 1-based line number (0 for entries not from a file).
    pub line: usize,
    /// Registry as normalized (`docker.io`, `ghcr.io`, `127.0.0.1:5001`).
    pub registry: String,
    /// Repository inside the registry.
    pub repository: RepoName,
    /// Which tags.
    pub tags: TagSelector,
    /// Platform filters (`linux/amd64`); empty means every platform.
    pub platforms: Vec<String>,
}

impl ListEntry {
    /// The image as written back, e.g. `docker.io/library/nginx:1.2*`.
    pub fn label(&self) -> String {
        let suffix = match &self.tags {
            TagSelector::All => String::new(),
            TagSelector::Exact(t) => format!(":{t}"),
            TagSelector::Pattern(p) => format!(":{}", p.as_str()),
            TagSelector::Digest(d) => format!("@{d}"),
        };
        format!("{}/{}{suffix}", self.registry, self.repository)
    }
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// 1-based line number.
    pub line: usize,
    /// The line's text (trimmed).
    pub text: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {:?}: {}", self.line, self.text, self.message)
    }
}

/// Parses a whole list; good lines are returned even when others are bad.
pub fn parse_list(text: &str) -> (Vec<ListEntry>, Vec<ListError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_line(content) {
            Ok(mut e) => {
                e.line = i + 1;
                entries.push(e);
            }
            Err(message) => errors.push(ListError {
                line: i + 1,
                text: content.to_owned(),
                message,
            }),
        }
    }
    (entries, errors)
}

/// Parses one line (without comment): an image and optional platform words.
pub fn parse_line(line: &str) -> Result<ListEntry, String> {
    let mut words = line.split_whitespace();
    let image = words.next().ok_or("empty line")?;
    let mut platforms = Vec::new();
    for word in words {
        let list = word
            .strip_prefix("--platform=")
            .or_else(|| word.strip_prefix("platform="))
            .unwrap_or(word);
        for p in list.split(',').filter(|p| !p.is_empty()) {
            platforms.push(parse_platform(p)?);
        }
    }
    let mut entry = parse_image(image)?;
    entry.platforms = platforms;
    Ok(entry)
}

/// Checks an `os/arch[/variant]` platform filter.
pub fn parse_platform(p: &str) -> Result<String, String> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(p.to_owned())
    } else {
        Err(format!(
            "{p:?} is not a platform (expected os/arch[/variant], e.g. linux/arm64/v8)"
        ))
    }
}

/// Parses an image reference whose tag may be a glob.
fn parse_image(image: &str) -> Result<ListEntry, String> {
    let image = image.strip_prefix("docker://").unwrap_or(image);
    let (name, tag_text) = split_tag(image);
    let is_glob = tag_text.is_some_and(|t| t.contains(['*', '?', '[', '{']));
    let parsed = if is_glob {
        ImageRef::parse(name)
    } else {
        ImageRef::parse(image)
    }
    .map_err(|e| e.to_string())?;
    let tags = match (&parsed.digest, &parsed.tag, tag_text) {
        (Some(d), _, _) => TagSelector::Digest(d.clone()),
        (None, Some(t), _) => TagSelector::Exact(t.clone()),
        (None, None, Some("*")) => TagSelector::All,
        (None, None, Some(p)) => TagSelector::Pattern(TagPattern::new(p)?),
        (None, None, None) => TagSelector::All,
    };
    Ok(ListEntry {
        line: 0,
        registry: parsed.registry,
        repository: parsed.repository,
        tags,
        platforms: Vec::new(),
    })
}

/// Splits `name[:tag]` at the tag's colon (the last `:` after the last `/`), ignoring digests.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let start = image.rfind('/').map_or(0, |i| i + 1);
    match image[start..].rfind(':') {
        Some(i) => (&image[..start + i], Some(&image[start + i + 1..])),
        None => (image, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> ListEntry {
        parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn forms_of_a_line() {
        let e = one("ghcr.io/org/app:1.2");
        assert_eq!(e.label(), "ghcr.io/org/app:1.2");
        assert!(matches!(e.tags, TagSelector::Exact(_)));
        let e = one("docker.io/library/nginx");
        assert!(matches!(e.tags, TagSelector::All));
        let e = one("nginx:1.2*");
        assert_eq!(e.label(), "docker.io/library/nginx:1.2*");
        let TagSelector::Pattern(p) = &e.tags else {
            panic!("pattern expected")
        };
        assert!(p.matches("1.2") && p.matches("1.25.3") && !p.matches("1.3"));
        let e = one("docker://127.0.0.1:5001/test/multi:v1 linux/amd64,linux/arm64/v8");
        assert_eq!(e.registry, "127.0.0.1:5001");
        assert_eq!(e.platforms, vec!["linux/amd64", "linux/arm64/v8"]);
        let e = one("127.0.0.1:5001/test/multi --platform=linux/amd64 platform=linux/s390x");
        assert_eq!(e.platforms, vec!["linux/amd64", "linux/s390x"]);
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let e = one(&format!("quay.io/a/b:1@{d}"));
        assert!(matches!(e.tags, TagSelector::Digest(_)));
        let e = one("localhost:5000/app:v{1,2}.?");
        let TagSelector::Pattern(p) = &e.tags else {
            panic!("pattern expected")
        };
        assert!(p.matches("v1.0") && p.matches("v2.9") && !p.matches("v3.0"));
        assert!(matches!(one("app:*").tags, TagSelector::All));
    }

    #[test]
    fn the_example_list_parses() {
        let (entries, errors) = parse_list(include_str!("../../../examples/sync-list.txt"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[5].platforms, vec!["linux/amd64", "linux/arm64"]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in ".{0,120}") {
            let _ = parse_list(&line);
        }
    }

    #[test]
    fn comments_blank_lines_and_errors() {
        let text =
            "# header\n\nnginx:1.25  # pinned\n  busybox\nBad/Name\nnginx linux\nalpine:3.[\n";
        let (entries, errors) = parse_list(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 3);
        assert_eq!(entries[1].label(), "docker.io/library/busybox");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 6, 7]);
        assert!(
            errors[1].to_string().contains("not a platform"),
            "{}",
            errors[1]
        );
    }
}
