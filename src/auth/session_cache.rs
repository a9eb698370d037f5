//! Sessions already opened, per worker. A signed-in browser sends the same cookie on every
//! request, and opening it (base64, AES-GCM, JSON) was the largest single cost of the signed-in
//! path: about 7,600 of its 57,000 instructions per request (`bench/cost.sh`'s callgrind run on
//! the cookie route). A cookie seen before is found here instead, and still checked for its
//! host and expiry on every request.

use std::sync::{Arc, Mutex};

use super::cookies::session_cookies;
use super::expiring::Expiring;
use super::session::KeyRing;
use crate::model::Identity;

pub struct SessionCache {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The ring every entry was opened with. Entries are only trusted while it is the current
    /// ring: a rotation that drops a key must also drop the sessions that key sealed. Holding the
    /// `Arc` keeps its address from being reused by a later ring.
    ring: Option<Arc<KeyRing>>,
    /// By cookie value, until the session expires. Only cookies that opened are stored, so a
    /// client cannot fill the cache with values of its choosing.
    entries: Expiring<Opened>,
}

struct Opened {
    /// The host the cookie opened for: it is sealed into the cookie, and matched as opening
    /// matches it, in any case.
    host: Box<str>,
    /// Shared with every request the cookie authenticates, so a hit copies no strings.
    identity: Arc<Identity>,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        SessionCache {
            inner: Mutex::new(Inner {
                ring: None,
                entries: Expiring::new(capacity),
            }),
        }
    }

    /// Who the first cookie in `headers` that opens for `host` with `keys` at `now` signs in,
    /// and when that session ends: the same answer as [`super::session::session_from`],
    /// without opening a cookie twice.
    pub fn session_from(
        &self,
        headers: &http::HeaderMap,
        host: &str,
        keys: &Arc<KeyRing>,
        now: u64,
    ) -> Option<(Arc<Identity>, u64)> {
        let mut inner = self.inner.lock().expect("never poisoned");
        if !inner
            .ring
            .as_ref()
            .is_some_and(|ring| Arc::ptr_eq(ring, keys))
        {
            inner.entries.clear();
            inner.ring = Some(keys.clone());
        }
        for value in session_cookies(headers) {
            if let Some((opened, expires_at)) = inner.entries.get(value, now) {
                if opened.host.eq_ignore_ascii_case(host) {
                    return Some((opened.identity.clone(), expires_at));
                }
                continue;
            }
            let Ok(session) = keys.open(value, host, now) else {
                continue;
            };
            let expires_at = session.expires_at;
            let identity = Arc::new(Identity::from(session));
            let opened = Opened {
                host: host.into(),
                identity: identity.clone(),
            };
            inner.entries.insert(value, opened, expires_at, now);
            return Some((identity, expires_at));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::session::{Session, unix_now};
    use http::HeaderMap;
    use http::header::COOKIE;

    const HOST: &str = "app.example.com";

    fn ring(secret: [u8; 32]) -> Arc<KeyRing> {
        Arc::new(KeyRing::new(&[secret]))
    }

    fn session(expires_at: u64) -> Session {
        Session {
            subject: "user-1".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            issuer: "https://idp.example.com".into(),
            groups: vec![],
            expires_at,
        }
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let pairs: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(at, value)| format!("KUBE_IAP_AUTH_TOKEN_{at}={value}"))
            .collect();
        headers.insert(COOKIE, pairs.join("; ").parse().unwrap());
        headers
    }

    #[test]
    fn a_cached_session_is_what_opening_the_cookie_gives_and_only_for_its_host() {
        let keys = ring([7; 32]);
        let sealed = keys.seal(&session(unix_now() + 600), HOST).unwrap();
        let cache = SessionCache::new(8);
        let headers = cookies(&["garbage", &sealed]);
        for _ in 0..2 {
            let opened = crate::auth::session::session_from(&headers, HOST, &keys)
                .map(|session| (session.expires_at, Identity::from(session)));
            assert_eq!(
                cache
                    .session_from(&headers, HOST, &keys, unix_now())
                    .map(|(identity, expires_at)| (expires_at, (*identity).clone())),
                opened,
            );
            assert!(
                cache
                    .session_from(&headers, HOST, &keys, unix_now())
                    .is_some()
            );
        }
        assert_eq!(
            cache.session_from(&headers, "other.example.com", &keys, unix_now()),
            None
        );
    }

    #[test]
    fn a_new_key_ring_drops_the_sessions_the_old_one_opened() {
        let old = ring([7; 32]);
        let sealed = old.seal(&session(unix_now() + 600), HOST).unwrap();
        let cache = SessionCache::new(8);
        let headers = cookies(&[&sealed]);
        assert!(
            cache
                .session_from(&headers, HOST, &old, unix_now())
                .is_some()
        );
        // Other key material: the cookie no longer opens, cached or not.
        let rotated = ring([9; 32]);
        assert_eq!(
            cache.session_from(&headers, HOST, &rotated, unix_now()),
            None
        );
    }

    #[test]
    fn an_expired_session_is_refused_even_when_cached() {
        let keys = ring([7; 32]);
        let cache = SessionCache::new(8);
        let now = unix_now();
        let sealed = keys.seal(&session(now + 600), HOST).unwrap();
        let headers = cookies(&[&sealed]);
        assert!(cache.session_from(&headers, HOST, &keys, now).is_some());
        // The cached copy, once its time has come.
        assert_eq!(cache.session_from(&headers, HOST, &keys, now + 600), None);
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let keys = ring([7; 32]);
        let cache = SessionCache::new(2);
        for at in 0..5 {
            let mut user = session(unix_now() + 600);
            user.subject = format!("user-{at}");
            let sealed = keys.seal(&user, HOST).unwrap();
            let opened = cache.session_from(&cookies(&[&sealed]), HOST, &keys, unix_now());
            assert_eq!(
                opened.map(|(identity, _)| identity.subject.clone()),
                Some(format!("user-{at}"))
            );
            assert!(cache.inner.lock().unwrap().entries.len() <= 2);
        }
    }
}
