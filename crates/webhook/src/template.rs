//! Rewrites the images of one pod template (a Pod's own metadata + spec, or the `template` of a
//! Deployment, Job, CronJob...) into JSONPatch operations.
//!
//! Every container, init container and ephemeral container whose image the [`Rules`] map gets a
//! `replace .../image` operation, and the template's metadata gets the annotation
//! [`ORIGINAL_IMAGES_ANNOTATION`]: a JSON object, container name -> image as written. Entries
//! already in that annotation are kept (they are older, hence more original), so a reinvocation
//! or a Pod created from an already rewritten template does not lose them.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::rules::{Rewrite, Rules, Skip};

/// Annotation recording the images as they were written, JSON `{"<container>": "<image>"}`.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "ferry.dev/original-images";

/// A JSON Pointer location inside the admitted object, as its path tokens.
#[derive(Debug, Clone)]
pub struct Location(pub Vec<&'static str>);

impl Location {
    /// Pointer to this location followed by `more` tokens.
    pub fn pointer(&self, more: &[&str]) -> PointerBuf {
        PointerBuf::from_tokens(self.0.iter().copied().chain(more.iter().copied()))
    }
}

/// Which containers of a spec may change.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A new object: every container list.
    All,
    /// The `ephemeralcontainers` subresource: only ephemeral containers not already present
    /// (existing ones are immutable).
    NewEphemeral(BTreeSet<String>),
}

/// The result of rewriting one template.
#[derive(Debug, Default)]
pub struct Changes {
    /// Patch operations (image replacements).
    pub ops: Vec<PatchOperation>,
    /// Container name -> original image, for the images that changed.
    pub originals: BTreeMap<String, String>,
    /// Messages for the user (invalid or unmappable images).
    pub warnings: Vec<String>,
}

/// Rewrites the images of `spec`, which sits at `at` in the object.
pub fn rewrite_spec(spec: &PodSpec, at: &Location, scope: &Scope, rules: &Rules) -> Changes {
    let mut changes = Changes::default();
    for (list, index, name, image) in containers(spec, scope) {
        let outcome = rules.rewrite(image);
        match outcome {
            Rewrite::Rewritten(new) => {
                let index = index.to_string();
                changes.ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: at.pointer(&[list, &index, "image"]),
                    value: Value::String(new),
                }));
                changes.originals.insert(name.to_owned(), image.to_owned());
            }
            Rewrite::Invalid(e) => changes.warnings.push(warning(name, image, &e.to_string())),
            Rewrite::Unchanged(Skip::Unrepresentable(why)) => {
                changes.warnings.push(warning(name, image, &why))
            }
            Rewrite::Unchanged(_) => {}
        }
    }
    changes
}

/// `(list key, index, container name, image)` of every container in scope that has an image.
fn containers<'a>(
    spec: &'a PodSpec,
    scope: &Scope,
) -> Vec<(&'static str, usize, &'a str, &'a str)> {
    let mut out = Vec::new();
    let mut push = |list, i, name: &'a str, image: &'a Option<String>| {
        if let Some(image) = image.as_deref() {
            out.push((list, i, name, image));
        }
    };
    if let Scope::All = scope {
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            push("initContainers", i, &c.name, &c.image);
        }
        for (i, c) in spec.containers.iter().enumerate() {
            push("containers", i, &c.name, &c.image);
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        if let Scope::NewEphemeral(existing) = scope
            && existing.contains(&c.name)
        {
            continue;
        }
        push("ephemeralContainers", i, &c.name, &c.image);
    }
    out
}

/// The patch operation that records `originals` in the metadata at `at` (absent if `meta` is).
pub fn annotate(
    meta: Option<&ObjectMeta>,
    at: &Location,
    originals: &BTreeMap<String, String>,
) -> PatchOperation {
    let annotations = meta.and_then(|m| m.annotations.as_ref());
    let mut merged: BTreeMap<String, String> = annotations
        .and_then(|a| a.get(ORIGINAL_IMAGES_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    for (name, image) in originals {
        merged.entry(name.clone()).or_insert_with(|| image.clone());
    }
    let value = serde_json::to_string(&merged).expect("a string map serializes");
    let (path, value) = match (meta, annotations) {
        (None, _) => (
            at.pointer(&[]),
            json!({ "annotations": { ORIGINAL_IMAGES_ANNOTATION: value } }),
        ),
        (Some(_), None) => (
            at.pointer(&["annotations"]),
            json!({ ORIGINAL_IMAGES_ANNOTATION: value }),
        ),
        (Some(_), Some(_)) => (
            at.pointer(&["annotations", ORIGINAL_IMAGES_ANNOTATION]),
            json!(value),
        ),
    };
    PatchOperation::Add(AddOperation { path, value })
}

/// A short user-facing warning about one container's image.
fn warning(container: &str, image: &str, why: &str) -> String {
    let mut w = format!("ferry: container {container:?}: image {image:?} left unchanged: {why}");
    if w.len() > 250 {
        let mut cut = 247;
        while !w.is_char_boundary(cut) {
            cut -= 1;
        }
        w.truncate(cut);
        w.push_str("...");
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn rules() -> Rules {
        Settings::from_yaml("mirror: m.example.com").unwrap().rules
    }

    #[test]
    fn rewrites_all_lists_and_records_originals() {
        let s = spec(json!({
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "noimg"}],
            "ephemeralContainers": [{"name": "dbg", "image": "ghcr.io/a/b:1"}],
        }));
        let c = rewrite_spec(&s, &Location(vec!["spec"]), &Scope::All, &rules());
        let paths: Vec<String> = c.ops.iter().map(|o| o.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/0/image",
                "/spec/containers/0/image",
                "/spec/ephemeralContainers/0/image"
            ]
        );
        assert_eq!(c.originals["app"], "nginx:1.25");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn new_ephemeral_scope_skips_existing_and_regular_containers() {
        let s = spec(json!({
            "containers": [{"name": "app", "image": "nginx"}],
            "ephemeralContainers": [{"name": "old", "image": "busybox"}, {"name": "new", "image": "busybox"}],
        }));
        let scope = Scope::NewEphemeral(["old".to_owned()].into());
        let c = rewrite_spec(&s, &Location(vec!["spec"]), &scope, &rules());
        assert_eq!(c.ops.len(), 1);
        assert_eq!(
            c.ops[0].path().to_string(),
            "/spec/ephemeralContainers/1/image"
        );
    }

    #[test]
    fn invalid_images_warn() {
        let s = spec(json!({"containers": [{"name": "x", "image": "NGINX"}]}));
        let c = rewrite_spec(&s, &Location(vec!["spec"]), &Scope::All, &rules());
        assert!(c.ops.is_empty());
        assert!(c.warnings[0].contains("\"NGINX\""), "{:?}", c.warnings);
    }

    #[test]
    fn annotation_op_depends_on_what_exists() {
        let at = Location(vec!["spec", "template", "metadata"]);
        let originals: BTreeMap<String, String> = [("a".to_owned(), "nginx".to_owned())].into();
        let op = annotate(None, &at, &originals);
        assert_eq!(op.path().to_string(), "/spec/template/metadata");
        let meta = ObjectMeta::default();
        assert_eq!(
            annotate(Some(&meta), &at, &originals).path().to_string(),
            "/spec/template/metadata/annotations"
        );
        let meta = ObjectMeta {
            annotations: Some(
                [(
                    ORIGINAL_IMAGES_ANNOTATION.to_owned(),
                    r#"{"a":"old"}"#.to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let PatchOperation::Add(add) = annotate(Some(&meta), &at, &originals) else {
            panic!("not an add")
        };
        assert_eq!(
            add.path.to_string(),
            "/spec/template/metadata/annotations/ferry.dev~1original-images"
        );
        assert_eq!(add.value, json!(r#"{"a":"old"}"#));
    }
}
