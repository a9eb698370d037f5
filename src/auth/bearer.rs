//! Bearer ID tokens: where they are found, and a cache of verified ones so a repeated token
//! costs a hash lookup instead of a signature check.

use std::collections::HashMap;
use std::sync::Mutex;

use http::HeaderMap;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};

use crate::model::Identity;

/// Which header carried the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerHeader {
    Authorization,
    ProxyAuthorization,
}

/// The bearer token a request presents to the proxy. `Proxy-Authorization` is meant for the
/// proxy, so it wins; `Authorization` is used when it is the only one.
pub fn bearer_token(headers: &HeaderMap) -> Option<(BearerHeader, &str)> {
    let find = |name| {
        headers
            .get(name)
            .and_then(|value: &http::HeaderValue| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim())
                    .filter(|token| !token.is_empty())
            })
    };
    if let Some(token) = find(PROXY_AUTHORIZATION) {
        return Some((BearerHeader::ProxyAuthorization, token));
    }
    find(AUTHORIZATION).map(|token| (BearerHeader::Authorization, token))
}

/// Verified tokens by a hash of (OAuth client, token), until they expire.
pub struct BearerCache {
    entries: Mutex<HashMap<[u8; 32], (Identity, u64)>>,
    capacity: usize,
}

impl BearerCache {
    pub fn new(capacity: usize) -> Self {
        BearerCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn key(client: &str, token: &str) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(client.as_bytes());
        context.update(&[0]);
        context.update(token.as_bytes());
        context
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    /// The identity of a token verified before and its expiry, if it has not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<(Identity, u64)> {
        let entries = self.entries.lock().expect("never poisoned");
        let (identity, expires_at) = entries.get(key)?;
        (*expires_at > now).then(|| (identity.clone(), *expires_at))
    }

    pub fn insert(&self, key: [u8; 32], identity: Identity, expires_at: u64, now: u64) {
        let mut entries = self.entries.lock().expect("never poisoned");
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, expiry)| *expiry > now);
            if entries.len() >= self.capacity {
                // Still full of live tokens: start over rather than grow without bound.
                entries.clear();
            }
        }
        entries.insert(key, (identity, expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.parse::<http::HeaderName>().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn proxy_authorization_wins_and_other_schemes_are_not_bearer_tokens() {
        let both = headers(&[
            ("authorization", "Bearer for-the-app"),
            ("proxy-authorization", "bearer for-the-proxy"),
        ]);
        assert_eq!(
            bearer_token(&both),
            Some((BearerHeader::ProxyAuthorization, "for-the-proxy"))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer  abc ")])),
            Some((BearerHeader::Authorization, "abc"))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic dXNlcjpw")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(bearer_token(&headers(&[])), None);
    }

    #[test]
    fn cached_tokens_expire_and_the_cache_stays_bounded() {
        let cache = BearerCache::new(2);
        let identity = Identity {
            subject: "s".into(),
            email: None,
            email_verified: false,
            issuer: "i".into(),
            groups: vec![],
            service_account: None,
        };
        let key = BearerCache::key("ns/idp", "token-1");
        assert_ne!(key, BearerCache::key("ns/other", "token-1"), "per client");
        cache.insert(key, identity.clone(), 100, 50);
        assert_eq!(cache.get(&key, 99), Some((identity.clone(), 100)));
        assert_eq!(cache.get(&key, 100), None, "expired");
        for i in 0..10 {
            cache.insert(
                BearerCache::key("c", &i.to_string()),
                identity.clone(),
                1000,
                50,
            );
        }
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}
