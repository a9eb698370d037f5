//! TLS certificates from `kubernetes.io/tls` Secrets.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS Secret cannot be served; shown on the policy's status (never the key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSecretError {
    #[error("Secret {0} does not exist")]
    Missing(String),
    #[error("Secret {secret} has no {key} entry")]
    MissingKey { secret: String, key: &'static str },
    #[error("Secret {secret}: {key} is not valid PEM")]
    BadPem { secret: String, key: &'static str },
    #[error(
        "Secret {secret}: the private key does not fit the certificate or is of an unsupported type"
    )]
    KeyMismatch { secret: String },
}

pub fn certified_key(
    name: &str,
    secret: Option<&Secret>,
) -> Result<Arc<CertifiedKey>, TlsSecretError> {
    let secret = secret.ok_or_else(|| TlsSecretError::Missing(name.to_string()))?;
    let entry = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.as_slice())
            .filter(|bytes| !bytes.is_empty())
            .ok_or(TlsSecretError::MissingKey {
                secret: name.to_string(),
                key,
            })
    };
    let bad_pem = |key| TlsSecretError::BadPem {
        secret: name.to_string(),
        key,
    };

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(entry("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|_| bad_pem("tls.crt"))?;
    if chain.is_empty() {
        return Err(bad_pem("tls.crt"));
    }
    let key = PrivateKeyDer::from_pem_slice(entry("tls.key")?).map_err(|_| bad_pem("tls.key"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|_| TlsSecretError::KeyMismatch {
            secret: name.to_string(),
        })
}
