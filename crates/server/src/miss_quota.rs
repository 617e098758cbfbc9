//! The access grant as the engine's [`MissGate`]: a client over its cache-miss quota
//! (`miss_requests`, `miss_bytes`) is refused exactly where its request would make ferry fetch
//! from an upstream, and still served whatever is cached, whoever cached it.

use std::sync::Mutex;

use ferry_access::{Denial, Grant};
use ferry_mirror::{MirrorError, MissGate, MissRefused};

/// A request's grant, asked by the engine before an upstream fetch; keeps the denial it gave
/// so the answer is the quota's own (status, message, `Retry-After`).
pub(crate) struct MissQuota<'a> {
    grant: &'a Grant,
    denial: Mutex<Option<Denial>>,
}

impl<'a> MissQuota<'a> {
    /// The gate of `grant`.
    pub(crate) fn new(grant: &'a Grant) -> Self {
        MissQuota {
            grant,
            denial: Mutex::new(None),
        }
    }

    /// The denial behind a [`MirrorError::MissRefused`] this gate caused, or the error as it
    /// was.
    pub(crate) fn refusal(self, e: MirrorError) -> Result<Denial, MirrorError> {
        match (e, self.denial.into_inner().ok().flatten()) {
            (MirrorError::MissRefused(_), Some(d)) => Ok(d),
            (e, _) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl MissGate for MissQuota<'_> {
    async fn admit_miss(&self) -> Result<(), MissRefused> {
        self.grant.miss_allowed().map_err(|d| {
            let refused = MissRefused(d.message.clone());
            *self.denial.lock().expect("miss gate lock") = Some(d);
            refused
        })
    }
}
