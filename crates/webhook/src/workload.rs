//! Which object kinds carry a pod template, where it sits, and whether this request may change it.
//!
//! - `Pod` on CREATE: the pod itself (all containers, plus the original-images annotation).
//! - `Pod` on UPDATE of the `ephemeralcontainers` subresource (`kubectl debug`): only the newly
//!   added ephemeral containers; the apiserver drops metadata changes there, so no annotation.
//!   Other Pod UPDATEs are left alone: rewriting a running pod's image would restart it.
//! - Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job (`spec.template`)
//!   and CronJob (`spec.jobTemplate.spec.template`) on CREATE and UPDATE, if the
//!   MutatingWebhookConfiguration sends them (the shipped one sends Pods only).
//!
//! Gates, in order: `enabled`, the namespace filters, the opt-out annotation
//! [`OPT_OUT_ANNOTATION`] (on the object or its template), then the mirror health gate.

use std::collections::BTreeSet;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

use crate::health::Gate;
use crate::settings::Settings;
use crate::template::{self, Location, Scope};

/// Annotation that opts an object out: `ferry.dev/rewrite: "false"`.
pub const OPT_OUT_ANNOTATION: &str = "ferry.dev/rewrite";

/// The patch and warnings for one request.
#[derive(Debug, Default)]
pub struct Mutation {
    /// JSONPatch operations (empty: admit unchanged).
    pub ops: Vec<PatchOperation>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
}

impl Mutation {
    /// No change, one warning.
    pub fn warn(message: String) -> Mutation {
        Mutation {
            ops: Vec::new(),
            warnings: vec![message],
        }
    }
}

/// Where the pod template is and what may change in it.
struct Plan {
    meta: Location,
    spec: Location,
    scope: Scope,
    annotate: bool,
}

/// Decides the patch for one admission request.
pub fn mutate(req: &AdmissionRequest<DynamicObject>, settings: &Settings, gate: &Gate) -> Mutation {
    let Some(object) = &req.object else {
        return Mutation::default();
    };
    let namespace = req
        .namespace
        .as_deref()
        .or(object.metadata.namespace.as_deref())
        .unwrap_or("default");
    if !settings.config.enabled || !settings.namespaces.admits(namespace) {
        return Mutation::default();
    }
    let Some(plan) = plan(req) else {
        return Mutation::default();
    };
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return Mutation::warn(format!(
                "ferry: cannot read the object ({e}); admitted unchanged"
            ));
        }
    };
    let (meta, spec) = match extract(&value, &plan) {
        Ok(found) => found,
        Err(e) => {
            return Mutation::warn(format!(
                "ferry: cannot read the pod template ({e}); admitted unchanged"
            ));
        }
    };
    if opted_out(Some(&object.metadata)) || opted_out(meta.as_ref()) {
        return Mutation::default();
    }
    if let Gate::Closed(reason) = gate {
        return Mutation::warn(format!(
            "ferry: mirror unhealthy ({reason}); images not rewritten"
        ));
    }
    let changes = template::rewrite_spec(&spec, &plan.spec, &plan.scope, &settings.rules);
    let mut ops = changes.ops;
    if !ops.is_empty() && plan.annotate {
        ops.push(template::annotate(
            meta.as_ref(),
            &plan.meta,
            &changes.originals,
        ));
    }
    log(req, namespace, ops.len(), changes.originals.len());
    Mutation {
        ops,
        warnings: changes.warnings,
    }
}

/// The plan for this kind and operation, or `None` to leave the object alone.
fn plan(req: &AdmissionRequest<DynamicObject>) -> Option<Plan> {
    let kind = (req.kind.group.as_str(), req.kind.kind.as_str());
    let sub = req.sub_resource.as_deref().filter(|s| !s.is_empty());
    let create_or_update = matches!(req.operation, Operation::Create | Operation::Update);
    let base: &[&'static str] = match (kind, sub) {
        (("", "Pod"), None) if req.operation == Operation::Create => &[],
        (("", "Pod"), Some("ephemeralcontainers")) if req.operation == Operation::Update => {
            return Some(Plan {
                meta: Location(vec!["metadata"]),
                spec: Location(vec!["spec"]),
                scope: Scope::NewEphemeral(old_ephemeral_names(req)),
                annotate: false,
            });
        }
        (("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"), None)
        | (("batch", "Job"), None)
        | (("", "ReplicationController"), None)
            if create_or_update =>
        {
            &["spec", "template"]
        }
        (("batch", "CronJob"), None) if create_or_update => {
            &["spec", "jobTemplate", "spec", "template"]
        }
        _ => return None,
    };
    let under = |last| Location(base.iter().copied().chain([last]).collect());
    Some(Plan {
        meta: under("metadata"),
        spec: under("spec"),
        scope: Scope::All,
        annotate: true,
    })
}

/// The template's metadata (if present) and pod spec.
fn extract(object: &Value, plan: &Plan) -> Result<(Option<ObjectMeta>, PodSpec), String> {
    let at = |loc: &Location| {
        object
            .pointer(loc.pointer(&[]).as_str())
            .filter(|v| !v.is_null())
    };
    let meta = at(&plan.meta)
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| format!("metadata: {e}"))?;
    let spec = at(&plan.spec).ok_or_else(|| "no pod spec".to_owned())?;
    let spec = serde_json::from_value(spec.clone()).map_err(|e| format!("pod spec: {e}"))?;
    Ok((meta, spec))
}

fn old_ephemeral_names(req: &AdmissionRequest<DynamicObject>) -> BTreeSet<String> {
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let list = old
        .as_ref()
        .and_then(|o| o.pointer("/spec/ephemeralContainers"))
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn opted_out(meta: Option<&ObjectMeta>) -> bool {
    meta.and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(OPT_OUT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

fn log(req: &AdmissionRequest<DynamicObject>, namespace: &str, ops: usize, images: usize) {
    if ops > 0 {
        tracing::info!(
            uid = %req.uid, namespace, kind = %req.kind.kind, name = %req.name, images, dry_run = req.dry_run,
            "rewrote images"
        );
    } else {
        tracing::debug!(uid = %req.uid, namespace, kind = %req.kind.kind, name = %req.name, "nothing to rewrite");
    }
}
