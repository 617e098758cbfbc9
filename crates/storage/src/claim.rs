//! Claims on filling a blob, so that replicas sharing one store download each blob once.
//!
//! Within one process the cache engine already coalesces concurrent requests for a missing blob
//! into one download. Across processes (several replicas over one object store) it asks the store
//! first, with [`crate::BlobStore::claim_fill`]: the store grants the claim to one replica at a
//! time (an object written with a conditional `If-None-Match: *` PUT, for the object backend) and
//! makes the others wait until the blob is stored, which they then read from the store instead of
//! the upstream. A claim is only an optimisation: content is verified and content-addressed, so
//! two replicas that both download a blob (a store without conditional writes, an expired claim)
//! store identical bytes.

use std::any::Any;

/// The answer to a claim.
pub enum FillClaim {
    /// This process should download the blob; keep the lease until the blob is stored or the
    /// download failed (dropping it releases the claim).
    Owner(FillLease),
    /// The blob appeared in the store while waiting: read it from there.
    Stored,
}

/// A held claim, released when dropped.
pub struct FillLease {
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl FillLease {
    /// A lease that holds nothing (single-process stores, or no coordination possible).
    pub fn local() -> Self {
        FillLease { _guard: None }
    }

    /// A lease whose `guard` releases the claim when dropped.
    pub fn guarded(guard: impl Any + Send + Sync) -> Self {
        FillLease {
            _guard: Some(Box::new(guard)),
        }
    }
}

impl std::fmt::Debug for FillLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillLease")
            .field("shared", &self._guard.is_some())
            .finish()
    }
}
