//! The session key ring from its Secret: every data entry is one key, and entries sort by name,
//! the greatest name newest (name them by date: `2026-11-26`, ...). A key is 32 bytes, given raw
//! or as the base64 text `openssl rand -base64 32` prints.

use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;

use crate::auth::session::KeyRing;

/// The default Secret, in the namespace the manifests or the controller use.
pub const DEFAULT_SECRET_NAME: &str = "kube-iap-session-keys";

/// The ring, or `None` (with the reason logged) when the Secret holds no usable key.
pub fn key_ring(name: &str, secret: Option<&Secret>) -> Option<Arc<KeyRing>> {
    let entries = entries_newest_first(secret);
    let mut keys = Vec::with_capacity(entries.len());
    for (entry, bytes) in entries {
        match decode_key(bytes) {
            Some(key) => keys.push(key),
            None => {
                tracing::warn!(secret = name, entry = %entry, "not a 32-byte key (raw or base64); skipped")
            }
        }
    }
    (!keys.is_empty()).then(|| Arc::new(KeyRing::new(&keys)))
}

/// A key Secret's data entries, the greatest name (the newest key) first.
pub(super) fn entries_newest_first(secret: Option<&Secret>) -> Vec<(&String, &[u8])> {
    let mut entries: Vec<(&String, &[u8])> = secret
        .and_then(|secret| secret.data.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.0.as_slice()))
        .collect();
    entries.sort_by(|a, b| b.0.cmp(a.0));
    entries
}

fn decode_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .find_map(|engine| engine.decode(text).ok())
    .and_then(|decoded| <[u8; 32]>::try_from(decoded.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(entries: &[(&str, Vec<u8>)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_base64_keys_load_and_bad_ones_are_skipped() {
        let b64 = base64::engine::general_purpose::STANDARD
            .encode([9u8; 32])
            .into_bytes();
        let ring = key_ring(
            "s",
            Some(&secret(&[
                ("2026-01", vec![1; 32]),
                ("2026-02", b64),
                ("junk", b"short".to_vec()),
            ])),
        );
        assert!(
            format!("{:?}", ring.expect("two usable keys"))
                .matches(',')
                .count()
                == 1,
            "two ids"
        );
        assert!(key_ring("s", Some(&secret(&[("junk", b"short".to_vec())]))).is_none());
        assert!(key_ring("s", None).is_none());
    }

    #[test]
    fn the_greatest_entry_name_seals() {
        let newest_first = KeyRing::new(&[[2; 32], [1; 32]]);
        let from_secret = key_ring(
            "s",
            Some(&secret(&[
                ("2026-01", vec![1; 32]),
                ("2026-02", vec![2; 32]),
            ])),
        )
        .unwrap();
        assert_eq!(format!("{from_secret:?}"), format!("{newest_first:?}"));
    }
}
