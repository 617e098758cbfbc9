//! Bearer tokens from registry token services, cached per (endpoint, account, scope) until they
//! expire. Concurrent requests that need the same token wait for one token request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A token and when it stops being usable.
#[derive(Debug)]
pub struct Token {
    /// The bearer value.
    pub value: String,
    /// When to stop using it (a little before the registry's expiry).
    pub expires_at: Instant,
}

impl Token {
    /// Whether it is still usable.
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.expires_at
    }
}

/// Cache key: endpoint index, account index, scope.
pub type TokenKey = (usize, usize, String);

/// The token cache (coalescing concurrent fetches of one key).
pub type TokenCache = moka::future::Cache<TokenKey, Arc<Token>>;

/// A new token cache.
pub fn new_cache() -> TokenCache {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(3600))
        .build()
}

/// The JSON a token service answers with.
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// Converts to a [`Token`], applying the spec's 60-second default lifetime and a safety margin.
    pub fn into_token(self) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self.expires_in.unwrap_or(60).max(1);
        let margin = if lifetime > 40 { 10 } else { lifetime / 4 };
        Some(Token {
            value,
            expires_at: Instant::now() + Duration::from_secs(lifetime - margin),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_json_forms() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.expires_at > Instant::now() + Duration::from_secs(280));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"xyz"}"#).unwrap();
        assert!(t.into_token().unwrap().expires_at < Instant::now() + Duration::from_secs(61));
        let t: TokenResponse = serde_json::from_str(r#"{"expires_in":3}"#).unwrap();
        assert!(t.into_token().is_none());
    }
}
