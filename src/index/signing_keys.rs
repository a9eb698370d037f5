//! The assertion signing keys from their Secret (`kube-iap-signing-keys`, next to the session
//! keys): every data entry is one PEM PKCS#8 P-256 private key (`openssl genpkey -algorithm EC
//! -pkeyopt ec_paramgen_curve:P-256`), the greatest entry name newest.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use crate::auth::assertion::{SigningKey, SigningKeys};

pub const DEFAULT_SECRET_NAME: &str = "kube-iap-signing-keys";

/// The ring, or `None` (with the reason logged) when the Secret holds no usable key.
pub fn signing_keys(name: &str, secret: Option<&Secret>) -> Option<Arc<SigningKeys>> {
    let entries = super::session_keys::entries_newest_first(secret);
    let mut keys = Vec::with_capacity(entries.len());
    for (entry, bytes) in entries {
        let parsed = PrivatePkcs8KeyDer::from_pem_slice(bytes)
            .map_err(|error| format!("not a PEM PKCS#8 key: {error}"))
            .and_then(|der| SigningKey::from_pkcs8(der.secret_pkcs8_der()));
        match parsed {
            Ok(key) => keys.push(key),
            Err(reason) => {
                tracing::warn!(secret = name, entry = %entry, %reason, "signing key skipped")
            }
        }
    }
    SigningKeys::new(keys).map(Arc::new)
}
