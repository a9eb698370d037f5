//! The session cookie: who signed in, for which host, until when. Sealed with AES-256-GCM (ring,
//! the TLS provider already compiled in), the host as associated data so a cookie minted for one
//! host is worthless on another. No provider tokens inside, so it stays small.
//!
//! Keys form a ring: the newest seals, every key opens, so adding a key logs nobody out. A cookie
//! names the key that sealed it by a short id derived from the key itself, so every replica that
//! reads the same Secret agrees on the ids.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::model::Identity;

/// Cookie format version; a new layout gets a new prefix.
const VERSION: &str = "v1";
/// Browsers drop cookies over 4096 bytes (name and attributes included); keep well below.
pub const MAX_COOKIE_VALUE_LEN: usize = 3800;

/// Who signed in. Only what policies need: groups are filtered to those some policy names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The provider's subject (`sub`), the user's stable opaque id.
    #[serde(rename = "s")]
    pub subject: String,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "v", default)]
    pub email_verified: bool,
    #[serde(rename = "i")]
    pub issuer: String,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Seconds since the Unix epoch.
    #[serde(rename = "x")]
    pub expires_at: u64,
}

/// Why a cookie does not authenticate. Deliberately coarse: the reason is logged, never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the cookie is not a kube-iap session")]
    Malformed,
    #[error("the cookie was sealed with a key this ring does not hold")]
    UnknownKey,
    #[error("the cookie was tampered with or minted for another host")]
    Forged,
    #[error("the session has expired")]
    Expired,
    #[error("the session is too large for a cookie")]
    TooLarge,
}

struct RingKey {
    id: String,
    key: LessSafeKey,
}

/// Session keys, newest first.
///
/// Its `Debug` shows key ids only, never key material.
pub struct KeyRing {
    keys: Vec<RingKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// A ring from raw 32-byte keys, newest first. Keys of another length are skipped.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        let keys = keys
            .iter()
            .map(|bytes| {
                let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
                let id = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..6]);
                let key = LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"),
                );
                RingKey { id, key }
            })
            .collect();
        KeyRing {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// A ring with one fresh random key, for when no Secret holds keys (sessions then do not
    /// survive a restart).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source works");
        KeyRing::new(&[key])
    }

    /// Seals `session` for `host` with the newest key.
    pub fn seal(&self, session: &Session, host: &str) -> Result<String, SessionError> {
        let payload = serde_json::to_vec(session).expect("a session serializes");
        self.seal_bytes(payload, Purpose::Session, host)
    }

    /// Opens a cookie value for `host` at `now` (seconds since the Unix epoch).
    pub fn open(&self, value: &str, host: &str, now: u64) -> Result<Session, SessionError> {
        let plain = self.open_bytes(value, Purpose::Session, host)?;
        let session: Session =
            serde_json::from_slice(&plain).map_err(|_| SessionError::Malformed)?;
        if session.expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }

    /// Encrypts `payload` for `purpose` on `host` with the newest key, as a cookie-safe string.
    pub fn seal_bytes(
        &self,
        mut payload: Vec<u8>,
        purpose: Purpose,
        host: &str,
    ) -> Result<String, SessionError> {
        let newest = self.keys.first().ok_or(SessionError::UnknownKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SessionError::Malformed)?;
        newest
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad(host)),
                &mut payload,
            )
            .map_err(|_| SessionError::Malformed)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&payload);
        let value = format!("{VERSION}.{}.{}", newest.id, URL_SAFE_NO_PAD.encode(sealed));
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return Err(SessionError::TooLarge);
        }
        Ok(value)
    }

    /// Decrypts what [`KeyRing::seal_bytes`] sealed for the same purpose and host.
    pub fn open_bytes(
        &self,
        value: &str,
        purpose: Purpose,
        host: &str,
    ) -> Result<Vec<u8>, SessionError> {
        let mut parts = value.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SessionError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|key| key.id == id)
            .ok_or(SessionError::UnknownKey)?;
        let mut sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SessionError::Malformed)?;
        if sealed.len() < NONCE_LEN {
            return Err(SessionError::Malformed);
        }
        let mut ciphertext = sealed.split_off(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed).map_err(|_| SessionError::Malformed)?;
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(purpose.aad(host)), &mut ciphertext)
            .map_err(|_| SessionError::Forged)?
            .len();
        ciphertext.truncate(plain_len);
        Ok(ciphertext)
    }
}

/// What a sealed value is for. It is part of the associated data, so a value sealed for one
/// purpose (a login in progress) never opens as another (a session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Session,
    Login,
}

impl Purpose {
    /// Hosts are compared case-insensitively everywhere else, so here too.
    fn aad(self, host: &str) -> Vec<u8> {
        let prefix: &[u8] = match self {
            // Sessions keep the bare host, so cookies sealed before purposes existed still open.
            Purpose::Session => b"",
            Purpose::Login => b"login\0",
        };
        let mut aad = prefix.to_vec();
        aad.extend(host.to_ascii_lowercase().into_bytes());
        aad
    }
}

impl From<Session> for Identity {
    fn from(session: Session) -> Self {
        Identity {
            subject: session.subject,
            email: session.email,
            email_verified: session.email_verified,
            issuer: session.issuer,
            groups: session.groups,
            service_account: None,
        }
    }
}

/// The session of the first cookie in `headers` that opens for `host` (canonical) with `keys`.
pub fn session_from(headers: &http::HeaderMap, host: &str, keys: &KeyRing) -> Option<Session> {
    let now = unix_now();
    super::cookies::session_cookies(headers).find_map(|value| keys.open(value, host, now).ok())
}

/// Seconds since the Unix epoch, the clock sessions and login states are stamped with.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The groups worth keeping in a session: those some policy names. A user in hundreds of groups
/// would otherwise overflow the cookie.
pub fn groups_policies_need<'a>(
    groups: impl IntoIterator<Item = &'a str>,
    needed: &impl Fn(&str) -> bool,
) -> Vec<String> {
    groups
        .into_iter()
        .filter(|group| needed(group))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn session() -> Session {
        Session {
            subject: "user-123".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            issuer: "https://idp.example.com".into(),
            groups: vec!["engineering".into()],
            expires_at: NOW + 3600,
        }
    }

    #[test]
    fn a_sealed_session_opens_on_its_host_in_any_case() {
        let ring = KeyRing::new(&[[7; 32]]);
        let cookie = ring.seal(&session(), "app.example.com").unwrap();
        assert!(cookie.starts_with("v1."));
        assert!(
            !cookie.contains("alice"),
            "the cookie is encrypted, not just signed"
        );
        assert_eq!(ring.open(&cookie, "App.Example.com", NOW), Ok(session()));
    }

    #[test]
    fn a_cookie_for_another_host_a_tampered_one_and_garbage_are_refused() {
        let ring = KeyRing::new(&[[7; 32]]);
        let cookie = ring.seal(&session(), "app.example.com").unwrap();
        assert_eq!(
            ring.open(&cookie, "other.example.com", NOW),
            Err(SessionError::Forged)
        );

        let mut tampered = cookie.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            ring.open(&tampered, "app.example.com", NOW),
            Err(SessionError::Forged | SessionError::Malformed)
        ));

        for garbage in ["", "garbage", "v1.", "v1.abc.", "v2.x.y", "v1.!!!.###"] {
            assert!(
                ring.open(garbage, "app.example.com", NOW).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn an_expired_session_is_refused() {
        let ring = KeyRing::new(&[[7; 32]]);
        let cookie = ring.seal(&session(), "app.example.com").unwrap();
        assert_eq!(
            ring.open(&cookie, "app.example.com", NOW + 3600),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn adding_a_key_logs_nobody_out_and_removing_it_does() {
        let old = KeyRing::new(&[[1; 32]]);
        let cookie = old.seal(&session(), "app.example.com").unwrap();
        let rotated = KeyRing::new(&[[2; 32], [1; 32]]);
        assert_eq!(rotated.open(&cookie, "app.example.com", NOW), Ok(session()));
        let fresh = rotated.seal(&session(), "app.example.com").unwrap();
        assert_ne!(
            fresh.split('.').nth(1),
            cookie.split('.').nth(1),
            "the newest key seals"
        );
        let retired = KeyRing::new(&[[2; 32]]);
        assert_eq!(
            retired.open(&cookie, "app.example.com", NOW),
            Err(SessionError::UnknownKey)
        );
    }

    #[test]
    fn two_hundred_groups_fit_once_filtered_to_what_policies_need() {
        let all: Vec<String> = (0..200)
            .map(|i| format!("team-platform-engineering-{i:03}"))
            .collect();
        let mut big = session();
        big.groups = all.clone();
        let ring = KeyRing::new(&[[7; 32]]);
        assert_eq!(
            ring.seal(&big, "app.example.com"),
            Err(SessionError::TooLarge),
            "unfiltered, it cannot fit"
        );

        let needed = |group: &str| group.ends_with("-007") || group.ends_with("-150");
        big.groups = groups_policies_need(all.iter().map(String::as_str), &needed);
        let cookie = ring.seal(&big, "app.example.com").unwrap();
        assert!(cookie.len() < 400, "{} bytes", cookie.len());
        assert_eq!(
            ring.open(&cookie, "app.example.com", NOW)
                .unwrap()
                .groups
                .len(),
            2
        );
    }
}
