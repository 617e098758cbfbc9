//! The miss gate: what the engine asks right before a request makes it fetch content from an
//! upstream (a blob download it starts, a manifest GET, a tag it must revalidate before it can
//! answer). Hits never ask, whoever stored them (this replica or another one sharing the
//! store), nor does a request that joins a download already in flight.
//!
//! The engine knows nothing of quotas: the server implements [`MissGate`] over its access
//! grant (cache-miss quotas), and batch callers that are not metered pass [`Ungated`].

/// Asked by the engine exactly where a request would start an upstream fetch.
#[async_trait::async_trait]
pub trait MissGate: Send + Sync {
    /// `Ok` to go upstream; [`MissRefused`] to answer the request with that refusal instead
    /// (nothing is fetched).
    async fn admit_miss(&self) -> Result<(), MissRefused>;
}

/// Why a gate kept a request from going upstream. The gate that refused keeps the details it
/// needs to answer (the server's quota denial); this says what to log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache miss refused: {0}")]
pub struct MissRefused(pub String);

/// A gate that admits every miss (`ferry sync`, `ferry export`, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ungated;

#[async_trait::async_trait]
impl MissGate for Ungated {
    async fn admit_miss(&self) -> Result<(), MissRefused> {
        Ok(())
    }
}

/// How a blob's bytes may reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Always through ferry.
    Stream,
    /// A presigned object-store URL when the store can sign one (`storage.s3.redirect`),
    /// else through ferry.
    MayRedirect,
}
