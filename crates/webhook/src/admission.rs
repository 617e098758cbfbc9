//! One AdmissionReview in, one AdmissionReview out: the webhook's decision, without HTTP.
//!
//! The contract is "never break pod creation": whatever happens here, the answer is
//! `allowed: true`; problems become warnings (shown by `kubectl`) and the object is left as it
//! was. Only a body that is not an AdmissionReview at all (no JSON, no request uid to answer)
//! gets [`Reply::BadRequest`]; the apiserver treats that as a webhook failure, and with
//! `failurePolicy: Ignore` admits the pod unchanged.

use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;

use crate::health::Gate;
use crate::settings::Settings;
use crate::workload;

/// The HTTP-level answer to a `POST /mutate` body.
#[derive(Debug)]
pub enum Reply {
    /// 200 with this AdmissionReview JSON.
    Review(Vec<u8>),
    /// 400 with this message: the body is not an AdmissionReview.
    BadRequest(String),
}

/// Decides on one request body.
pub fn handle(body: &[u8], settings: &Settings, gate: &Gate) -> Reply {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reply::BadRequest(format!("body is not JSON: {e}")),
    };
    let review = match serde_json::from_value::<AdmissionReview<DynamicObject>>(value.clone()) {
        Ok(review) => review,
        Err(e) => return unreadable(&value, &e.to_string()),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return Reply::BadRequest("AdmissionReview has no request".into()),
    };
    let mutation = catch_unwind(AssertUnwindSafe(|| {
        workload::mutate(&request, settings, gate)
    }))
    .unwrap_or_else(|_| {
        workload::Mutation::warn("ferry: internal error; object admitted unchanged".into())
    });
    respond(&request, mutation)
}

/// Builds the allowed response, with the patch if there is one.
fn respond(request: &AdmissionRequest<DynamicObject>, mutation: workload::Mutation) -> Reply {
    let mut response = AdmissionResponse::from(request);
    let mut warnings = mutation.warnings;
    if !mutation.ops.is_empty() {
        let base = response.clone();
        response = match response.with_patch(json_patch::Patch(mutation.ops)) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!(
                    "ferry: cannot encode patch ({e}); object admitted unchanged"
                ));
                base
            }
        };
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    encode(response)
}

/// A JSON body that is not a well-formed AdmissionReview: allow it if there is a uid to answer.
fn unreadable(value: &Value, error: &str) -> Reply {
    let Some(uid) = value.pointer("/request/uid").and_then(Value::as_str) else {
        return Reply::BadRequest(format!("not an AdmissionReview: {error}"));
    };
    tracing::warn!(
        uid,
        error,
        "cannot read AdmissionReview; allowing unchanged"
    );
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Default::default();
    if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
        response.types.api_version = api_version.to_owned();
    }
    response.warnings = Some(vec![format!(
        "ferry: cannot read the request; object admitted unchanged"
    )]);
    encode(response)
}

/// Serializes the review, with `response.patch` as the base64 string the API documents (kube
/// writes `Vec<u8>` as a JSON array of numbers, which Go's decoder also accepts).
fn encode(response: AdmissionResponse) -> Reply {
    let patch = response.patch.as_deref().map(|p| BASE64.encode(p));
    let mut review = match serde_json::to_value(response.into_review()) {
        Ok(v) => v,
        Err(e) => return Reply::BadRequest(format!("cannot encode response: {e}")),
    };
    if let (Some(patch), Some(slot)) = (patch, review.pointer_mut("/response/patch")) {
        *slot = Value::String(patch);
    }
    match serde_json::to_vec(&review) {
        Ok(body) => Reply::Review(body),
        Err(e) => Reply::BadRequest(format!("cannot encode response: {e}")),
    }
}
