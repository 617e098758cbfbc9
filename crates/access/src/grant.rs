//! An admitted request: who it is, the concurrency slot it holds, and what its response body
//! must be counted against ([`Grant::meter`]).

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use futures_util::Stream;

use crate::denial::Denial;
use crate::meter::{Meter, Metered};
use crate::quota::concurrency::Permit;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No login (counted per client IP).
    Anonymous,
    /// A logged-in user (counted per user).
    User(String),
}

impl Identity {
    /// The user name, if logged in.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User(u) => f.write_str(u),
        }
    }
}

/// How a response body was produced, for the byte quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache.
    Hit,
    /// Fetched from the upstream (costs upstream traffic).
    Miss,
    /// Not content (an error, a redirect): not counted.
    None,
}

/// An admitted request.
#[derive(Debug)]
pub struct Grant {
    identity: Identity,
    ip: IpAddr,
    meter: Option<Meter>,
    permit: Option<Permit>,
    miss_denial: Option<Denial>,
    /// Bytes reserved against the byte quotas ([`Grant::reserve`]).
    reserved: Option<u64>,
    /// Fair-use notes for the answer's `Warning` header.
    warnings: Vec<String>,
}

impl Grant {
    /// A grant with nothing to count.
    pub(crate) fn free(identity: Identity, ip: IpAddr) -> Grant {
        Grant {
            identity,
            ip,
            meter: None,
            permit: None,
            miss_denial: None,
            reserved: None,
            warnings: Vec::new(),
        }
    }

    /// A grant with a slot, byte accounting and the cache-miss verdict.
    pub(crate) fn counted(
        identity: Identity,
        ip: IpAddr,
        meter: Option<Meter>,
        permit: Option<Permit>,
        miss_denial: Option<Denial>,
    ) -> Grant {
        Grant {
            identity,
            ip,
            meter,
            permit,
            miss_denial,
            reserved: None,
            warnings: Vec::new(),
        }
    }

    /// Adds fair-use notes.
    pub(crate) fn with_warnings(mut self, warnings: Vec<String>) -> Grant {
        self.warnings = warnings;
        self
    }

    /// Fair-use notes for the client (a `Warning` header) and the log: a rule with action
    /// `warn` fired, or downloads are slowed.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Who is asking.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The client address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Whether this client may cause an upstream fetch (a cache miss) now: `Err` when its
    /// `miss_requests` or `miss_bytes` quota is used up. Cached content is still served; call
    /// this before going upstream and answer the denial instead.
    pub fn miss_allowed(&self) -> Result<(), Denial> {
        match &self.miss_denial {
            Some(d) => Err(d.clone()),
            None => Ok(()),
        }
    }

    /// Reserves a body of `len` bytes against the byte quotas (and, for a `Miss`, the
    /// cache-miss byte quota) before its first byte is sent: `Err` when the client is already
    /// over one (answer the denial instead of the body). A client within its quota may start
    /// one download that overruns it; downloads it starts in parallel are refused, on this
    /// replica and on every replica sharing Redis, so the quota holds to within one body.
    /// [`Grant::meter`] gives back what was not sent; a body that is never metered (a
    /// redirect to the object store) keeps its whole reservation.
    pub async fn reserve(&mut self, len: u64, outcome: CacheOutcome) -> Result<(), Denial> {
        let Some(m) = self
            .meter
            .as_ref()
            .filter(|_| outcome != CacheOutcome::None)
        else {
            return Ok(());
        };
        let miss = outcome == CacheOutcome::Miss;
        crate::quota::reserve(&m.store, &m.tier, &m.subject, len, miss).await?;
        self.reserved = Some(len);
        Ok(())
    }

    /// Wraps a response body: counts its bytes against the byte quotas (and, for a `Miss`,
    /// the cache-miss quotas), throttles blob bytes to the bandwidth cap, and holds the
    /// concurrency slot until the body ends or is dropped. A body in progress is never cut.
    /// A reserved body ([`Grant::reserve`]) is not counted again; what it did not send is
    /// given back when it ends or is dropped.
    pub fn meter<S, E>(self, body: S, outcome: CacheOutcome) -> Metered<S>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
    {
        let meter = self.meter.filter(|_| outcome != CacheOutcome::None);
        let miss = outcome == CacheOutcome::Miss;
        Metered::new(body, meter, miss, self.reserved, self.permit)
    }
}
