//! From list lines to images ("what to sync"): each line's registry is resolved to a configured
//! upstream, and its tag selector expanded against the repository's tag list (fetched, and
//! cached, through the mirror). The result is one job per image.

use std::sync::Arc;

use ferry_mirror::{Mirror, Target};
use ferry_oci::{Reference, Tag};

use crate::error::SyncError;
use crate::list::{ListEntry, TagSelector};
use crate::retry::RetryPolicy;

/// One image to sync.
#[derive(Clone)]
pub struct Job {
    /// `registry/repository:tag` (or `@digest`), with the canonical upstream name.
    pub label: Arc<str>,
    /// The upstream repository.
    pub target: Target,
    /// Tag or digest.
    pub reference: Reference,
    /// Platform filters.
    pub platforms: Vec<String>,
}

/// Resolves one list entry into jobs (`defaults` apply when the line names no platform).
pub async fn expand(
    mirror: &Mirror,
    entry: &ListEntry,
    defaults: &[String],
    retry: RetryPolicy,
) -> Result<Vec<Job>, SyncError> {
    let name = format!("{}/{}", entry.registry, entry.repository);
    let target = mirror.resolve(&name, None, None)?;
    let references = match &entry.tags {
        TagSelector::Exact(t) => vec![Reference::Tag(t.clone())],
        TagSelector::Digest(d) => vec![Reference::Digest(d.clone())],
        TagSelector::All | TagSelector::Pattern(_) => {
            let tags = retry
                .run(|| tag_list(mirror, &target), |_, _, _| {})
                .await
                .map_err(|e| e.about(&format!("tag list of {name}")))?;
            select_tags(&entry.tags, &tags, &name)?
        }
    };
    let platforms = if entry.platforms.is_empty() {
        defaults.to_vec()
    } else {
        entry.platforms.clone()
    };
    Ok(references
        .into_iter()
        .map(|reference| Job {
            label: label(&target, &reference).into(),
            target: target.clone(),
            reference,
            platforms: platforms.clone(),
        })
        .collect())
}

async fn tag_list(mirror: &Mirror, target: &Target) -> Result<Vec<String>, SyncError> {
    Ok(mirror.tags(target).await?.0)
}

/// The tags of `all` that `selector` names, in a stable order.
pub fn select_tags(
    selector: &TagSelector,
    all: &[String],
    name: &str,
) -> Result<Vec<Reference>, SyncError> {
    let mut tags: Vec<Tag> = all
        .iter()
        .filter(|t| match selector {
            TagSelector::Pattern(p) => p.matches(t),
            _ => true,
        })
        .filter_map(|t| Tag::parse(t).ok())
        .collect();
    tags.sort();
    tags.dedup();
    if tags.is_empty() {
        let what = match selector {
            TagSelector::Pattern(p) => format!("no tag of {name} matches {:?}", p.as_str()),
            _ => format!("{name} has no tags"),
        };
        return Err(SyncError::NotFound(format!(
            "{what} ({} tags listed)",
            all.len()
        )));
    }
    Ok(tags.into_iter().map(Reference::Tag).collect())
}

/// `upstream/repository:tag` or `upstream/repository@digest`.
pub fn label(target: &Target, reference: &Reference) -> String {
    let sep = if reference.as_digest().is_some() {
        '@'
    } else {
        ':'
    };
    format!("{}/{}{sep}{reference}", target.name, target.repo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::TagPattern;

    #[test]
    fn patterns_pick_tags() {
        let all: Vec<String> = ["1.2", "1.25", "1.3", "latest", "1.2-alpine"]
            .map(String::from)
            .to_vec();
        let p = TagSelector::Pattern(TagPattern::new("1.2*").unwrap());
        let got: Vec<String> = select_tags(&p, &all, "x")
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, vec!["1.2", "1.2-alpine", "1.25"]);
        assert_eq!(select_tags(&TagSelector::All, &all, "x").unwrap().len(), 5);
        let none = TagSelector::Pattern(TagPattern::new("9.*").unwrap());
        let e = select_tags(&none, &all, "r/x").unwrap_err();
        assert!(e.to_string().contains("no tag of r/x matches"), "{e}");
    }
}
