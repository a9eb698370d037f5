//! Who a request is from (bearer token or session cookie) and what the backend is told about it:
//! the identity headers and the signed assertion.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use http::header::{HeaderName, HeaderValue};

use super::Proxy;
use super::headers::is_field_value;
use super::pages::Answer;
use crate::auth::assertion::{self, AssertionContext, Breakage, SigningKeys};
use crate::auth::id_token::{self, Expected, TokenError};
use crate::auth::session::unix_now;
use crate::model::{BackendIdentity, Identity, OidcClient};

/// Identity headers the backend receives; client-sent copies are always stripped first. Names
/// are built once: parsing them from text took a few hundred instructions per request each.
pub const EMAIL_HEADER: HeaderName = HeaderName::from_static("x-kube-iap-authenticated-user-email");
pub const USER_ID_HEADER: HeaderName = HeaderName::from_static("x-kube-iap-authenticated-user-id");
pub const ASSERTION_HEADER: HeaderName = HeaderName::from_static("x-kube-iap-jwt-assertion");
pub const GOOGLE_EMAIL_HEADER: HeaderName =
    HeaderName::from_static("x-goog-authenticated-user-email");
pub const GOOGLE_USER_ID_HEADER: HeaderName =
    HeaderName::from_static("x-goog-authenticated-user-id");
/// Prefix of the Google-compatible header values, where Google writes `accounts.google.com:`.
const GOOGLE_VALUE_PREFIX: &str = "kube-iap:";

/// An assertion is reused for the same caller and audience for this long (of its ten minutes),
/// so signing costs one ECDSA operation per caller per two minutes, not one per request.
const ASSERTION_REUSE_SECS: u64 = 120;
const ASSERTION_CACHE_CAPACITY: usize = 10_000;
/// How often an open WebSocket's access is checked again (revocation takes effect within this).
const REVOCATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Signed assertions by caller and audience, per worker. Entries are found by a 64-bit hash and
/// then compared in full, so a hash collision can never hand one caller another's assertion;
/// the hash (foldhash, seeded per process) only has to be fast.
#[derive(Default)]
pub struct AssertionCache {
    entries: Mutex<HashMap<u64, CachedAssertion>>,
    hasher: foldhash::fast::RandomState,
}

struct CachedAssertion {
    signed_for: (String, String, bool, Identity),
    value: HeaderValue,
    issued_at: u64,
}

/// The headers that tell the backend who is calling: plain ones (a value that is not valid header
/// text is left out rather than mangled) and the signed assertion. Client-sent copies were
/// stripped before anything else, so these are added, never merged.
pub struct IdentityFields<'a> {
    email: Option<&'a str>,
    subject: &'a str,
    /// Also the `x-goog-authenticated-user-*` headers, for backends written for Google IAP.
    google: bool,
    assertion: HeaderValue,
}

impl IdentityFields<'_> {
    /// About how many bytes the fields take in a request head (the assertion is most of it), so
    /// the lean client's head is allocated once instead of regrown as they are written.
    pub fn size(&self) -> usize {
        const NAMES: usize = 112;
        let plain = self.email.map_or(0, str::len) + self.subject.len();
        let google = if self.google { plain + NAMES } else { 0 };
        plain + google + self.assertion.len() + NAMES
    }

    /// Each field's name and value, in the order they are sent.
    pub fn for_each(&self, mut field: impl FnMut(&HeaderName, &[u8])) {
        if self.google {
            let mut prefixed = |name: &HeaderName, value: &str| {
                let value = format!("{GOOGLE_VALUE_PREFIX}{value}");
                if is_field_value(value.as_bytes()) {
                    field(name, value.as_bytes());
                }
            };
            if let Some(email) = self.email {
                prefixed(&GOOGLE_EMAIL_HEADER, email);
            }
            prefixed(&GOOGLE_USER_ID_HEADER, self.subject);
        }
        if let Some(email) = self.email.filter(|email| is_field_value(email.as_bytes())) {
            field(&EMAIL_HEADER, email.as_bytes());
        }
        if is_field_value(self.subject.as_bytes()) {
            field(&USER_ID_HEADER, self.subject.as_bytes());
        }
        field(&ASSERTION_HEADER, self.assertion.as_bytes());
    }
}

impl Proxy {
    /// The identity of a bearer token for `client` and when it expires: from the cache, else
    /// verified now.
    pub(super) async fn bearer_identity(
        &self,
        client: &OidcClient,
        token: &str,
    ) -> Result<(Arc<Identity>, u64), Answer> {
        let now = unix_now();
        if let Some(cached) = self.bearer_cache.get(client, token, now) {
            return Ok(cached);
        }
        let verified = match Expected::for_bearer(client, token) {
            None => Err(TokenError::Invalid(
                "the token's issuer is not the OAuthClient's nor a trusted one".into(),
            )),
            Some(expected) => {
                id_token::verify(self.logins.providers(), &expected, token, None).await
            }
        };
        let verified = verified.map_err(|error| {
            tracing::info!(client = %client.name, %error, "bearer token refused");
            match error {
                TokenError::ProviderUnavailable(_) => {
                    Answer::SignInFailed(crate::error_codes::ErrorCode::OAuthClientMisconfigured)
                }
                _ => Answer::InvalidToken,
            }
        })?;
        let identity = Arc::new(verified.identity);
        self.bearer_cache
            .insert(client, token, identity.clone(), verified.expires_at, now);
        Ok((identity, verified.expires_at))
    }

    /// Resolves once `identity` may no longer hold an upgraded connection open on `host` and
    /// `path`: the policy (re-read every second from the live table) stops admitting it, the
    /// route goes away or fails closed, or the credential expires.
    pub(super) fn watch_access(
        &self,
        host: &str,
        path: &str,
        method: &str,
        client: std::net::IpAddr,
        identity: Arc<Identity>,
        expires_at: u64,
    ) -> super::forward::Revocation {
        let table = self.table.clone();
        let (host, path, method) = (host.to_string(), path.to_string(), method.to_string());
        Box::pin(async move {
            let mut tick = tokio::time::interval(REVOCATION_CHECK);
            loop {
                tick.tick().await;
                let now = unix_now();
                if now >= expires_at {
                    return "the credential expired";
                }
                let table = table.load();
                let Some(route) = table.route(&host, &path) else {
                    return "the route was removed";
                };
                if !matches!(route.action, crate::model::RouteAction::Forward(_)) {
                    return "the route fails closed";
                }
                let facts = crate::model::RequestFacts {
                    path: &path,
                    method: &method,
                    client,
                    now: i64::try_from(now).unwrap_or(i64::MAX),
                };
                if let crate::model::Decision::Deny(_) =
                    route.access.evaluate(Some(&*identity), &facts)
                {
                    return "the policy no longer admits the caller";
                }
            }
        })
    }

    /// What the backend is told about who is calling.
    pub(super) fn identity_fields<'a>(
        &self,
        identity: &'a Identity,
        settings: &BackendIdentity,
        keys: &SigningKeys,
        breakage: Breakage,
    ) -> IdentityFields<'a> {
        IdentityFields {
            email: identity.email.as_deref(),
            subject: &identity.subject,
            google: settings.google_compatible || self.config.google_compatible_headers,
            assertion: self.assertion(identity, settings, keys, breakage),
        }
    }

    fn assertion(
        &self,
        identity: &Identity,
        settings: &BackendIdentity,
        keys: &SigningKeys,
        breakage: Breakage,
    ) -> HeaderValue {
        let now = unix_now();
        let context = AssertionContext {
            issuer: &self.assertion_issuer,
            audience: &settings.assertion_audience,
            include_groups: settings.include_groups,
            now,
        };
        let sign = || {
            // Whatever key signs must be published until its assertions expire, even if the
            // Secret changes again before anyone fetches the key set.
            self.jwks.observe(keys);
            HeaderValue::from_str(&assertion::sign(keys, identity, &context, breakage))
                .expect("a JWT is header-safe")
        };
        if breakage != Breakage::None {
            return sign();
        }
        let kid = &keys.newest().kid;
        let key = self.assertions.hasher.hash_one((
            kid,
            &settings.assertion_audience,
            settings.include_groups,
            identity,
        ));
        let mut entries = self.assertions.entries.lock().expect("never poisoned");
        if let Some(cached) = entries.get(&key) {
            let (cached_kid, audience, groups, signed_identity) = &cached.signed_for;
            if now.saturating_sub(cached.issued_at) < ASSERTION_REUSE_SECS
                && cached_kid == kid
                && *audience == settings.assertion_audience
                && *groups == settings.include_groups
                && signed_identity == identity
            {
                return cached.value.clone();
            }
        }
        if entries.len() >= ASSERTION_CACHE_CAPACITY {
            entries.retain(|_, cached| now.saturating_sub(cached.issued_at) < ASSERTION_REUSE_SECS);
            if entries.len() >= ASSERTION_CACHE_CAPACITY {
                entries.clear();
            }
        }
        let value = sign();
        entries.insert(
            key,
            CachedAssertion {
                signed_for: (
                    kid.clone(),
                    settings.assertion_audience.clone(),
                    settings.include_groups,
                    identity.clone(),
                ),
                value: value.clone(),
                issued_at: now,
            },
        );
        value
    }
}
