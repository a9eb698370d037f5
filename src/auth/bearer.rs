//! Bearer ID tokens: where they are found, and a cache of verified ones so a repeated token
//! costs a hash lookup instead of a signature check.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};

use super::expiring::Expiring;
use crate::model::{Identity, OidcClient};

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

/// `client` with its `verification_scope` set: a digest of everything a bearer token is checked
/// against (issuer, client ID, groups claim, how email is read, audiences, trusted issuers).
pub fn with_verification_scope(mut client: OidcClient) -> OidcClient {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so no two settings hash alike by running into each other.
    let mut field = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(bytes);
    };
    field(client.name.as_bytes());
    field(client.issuer.as_bytes());
    field(client.client_id.as_bytes());
    field(client.groups_claim.as_bytes());
    field(&[u8::from(client.assume_email_verified)]);
    for audience in &client.audiences {
        field(audience.as_bytes());
    }
    for trusted in &client.trusted_issuers {
        field(trusted.issuer.as_bytes());
        field(trusted.jwks_uri.as_deref().unwrap_or("").as_bytes());
        for audience in &trusted.audiences {
            field(audience.as_bytes());
        }
    }
    client.verification_scope = context
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes");
    client
}

/// Verified tokens, until they expire, with the OAuth client's `verification_scope` they were
/// checked under. A change to what a token is checked against (audiences, issuers, how email is
/// read) changes the scope, so an edited OAuthClient never keeps serving verdicts it would not
/// reach. Entries are found by the token itself (foldhash, then compared in full): hashing each
/// request's token with SHA-256 instead cost some 15,000 instructions, more than the rest of the
/// bearer path. Only verified tokens are stored, so a client cannot fill the cache at will.
pub struct BearerCache {
    entries: Mutex<Expiring<Verified>>,
}

struct Verified {
    scope: [u8; 32],
    /// Shared with each request the token authenticates, so a cache hit copies no strings.
    identity: Arc<Identity>,
}

impl BearerCache {
    pub fn new(capacity: usize) -> Self {
        BearerCache {
            entries: Mutex::new(Expiring::new(capacity)),
        }
    }

    /// The identity of `token`, verified before for `client`, and its expiry, if it has not
    /// expired at `now`.
    pub fn get(&self, client: &OidcClient, token: &str, now: u64) -> Option<(Arc<Identity>, u64)> {
        let entries = self.entries.lock().expect("never poisoned");
        let (verified, expires_at) = entries.get(token, now)?;
        (verified.scope == client.verification_scope)
            .then(|| (verified.identity.clone(), expires_at))
    }

    pub fn insert(
        &self,
        client: &OidcClient,
        token: &str,
        identity: Arc<Identity>,
        expires_at: u64,
        now: u64,
    ) {
        let verified = Verified {
            scope: client.verification_scope,
            identity,
        };
        let mut entries = self.entries.lock().expect("never poisoned");
        entries.insert(token, verified, expires_at, now);
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
        let identity = Arc::new(Identity {
            subject: "s".into(),
            email: None,
            email_verified: false,
            issuer: "i".into(),
            groups: vec![],
            service_account: None,
        });
        let client = |name: &str, audiences: &[&str]| {
            with_verification_scope(OidcClient {
                name: name.into(),
                issuer: "https://idp.test".into(),
                client_id: "app".into(),
                client_secret: crate::model::ClientSecret::new("s"),
                scopes: vec![],
                groups_claim: "groups".into(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                trusted_issuers: vec![],
                assume_email_verified: false,
                verification_scope: [0; 32],
            })
        };
        let idp = client("ns/idp", &["extra"]);
        cache.insert(&idp, "token-1", identity.clone(), 100, 50);
        assert_eq!(
            cache.get(&idp, "token-1", 99),
            Some((identity.clone(), 100))
        );
        assert_eq!(cache.get(&idp, "token-1", 100), None, "expired");
        assert_eq!(cache.get(&idp, "token-2", 99), None, "another token");
        assert_eq!(
            cache.get(&client("ns/other", &["extra"]), "token-1", 99),
            None,
            "per client"
        );
        assert_eq!(
            cache.get(&client("ns/idp", &[]), "token-1", 99),
            None,
            "an audience removed is a new scope"
        );
        let trusting = with_verification_scope(OidcClient {
            assume_email_verified: true,
            ..idp.clone()
        });
        assert_eq!(cache.get(&trusting, "token-1", 99), None);
        for i in 0..10 {
            cache.insert(&idp, &i.to_string(), identity.clone(), 1000, 50);
        }
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}
