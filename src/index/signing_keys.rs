//! The assertion signing keys from their Secret (`kube-iap-signing-keys`, next to the session
//! keys): every data entry is one PEM P-256 private key, the greatest entry name newest. Both
//! encodings tools write are read: PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`) and SEC1 `EC PRIVATE KEY` (Helm's `genPrivateKey "ecdsa"`, which the
//! chart uses, and `openssl ecparam -genkey`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use crate::auth::assertion::{SigningKey, SigningKeys};

pub const DEFAULT_SECRET_NAME: &str = "kube-iap-signing-keys";

/// The ring, or `None` (with the reason logged) when the Secret holds no usable key.
pub fn signing_keys(name: &str, secret: Option<&Secret>) -> Option<Arc<SigningKeys>> {
    let entries = super::session_keys::entries_newest_first(secret);
    let mut keys = Vec::with_capacity(entries.len());
    for (entry, bytes) in entries {
        let parsed = parse_key(bytes);
        match parsed {
            Ok(key) => keys.push(key),
            Err(reason) => {
                tracing::warn!(secret = name, entry = %entry, %reason, "signing key skipped")
            }
        }
    }
    SigningKeys::new(keys).map(Arc::new)
}

fn parse_key(pem: &[u8]) -> Result<SigningKey, String> {
    if let Ok(der) = PrivatePkcs8KeyDer::from_pem_slice(pem) {
        return SigningKey::from_pkcs8(der.secret_pkcs8_der());
    }
    let sec1 = PrivateSec1KeyDer::from_pem_slice(pem)
        .map_err(|_| "not a PEM PKCS#8 or SEC1 (EC PRIVATE KEY) key".to_string())?;
    let sec1 = sec1.secret_sec1_der();
    // A P-256 SEC1 key is about 121 bytes; anything far larger is not one, and refusing it here
    // keeps the DER lengths below within two bytes.
    if sec1.len() > MAX_SEC1_LEN {
        return Err(format!(
            "an EC PRIVATE KEY of {} bytes is not a P-256 key",
            sec1.len()
        ));
    }
    SigningKey::from_pkcs8(&sec1_to_pkcs8(sec1))
}

const MAX_SEC1_LEN: usize = 1024;

/// Wraps a SEC1 `ECPrivateKey` in the PKCS#8 `PrivateKeyInfo` for a P-256 key (RFC 5208 and
/// 5915): the same key, in the envelope ring reads. ring then checks the inner key and curve.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // version 0, then AlgorithmIdentifier { id-ecPublicKey, prime256v1 }.
    const VERSION_AND_ALGORITHM: [u8; 24] = [
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
        0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut inner = VERSION_AND_ALGORITHM.to_vec();
    inner.push(0x04); // OCTET STRING holding the SEC1 document
    push_der_length(&mut inner, sec1.len());
    inner.extend_from_slice(sec1);
    let mut document = vec![0x30]; // SEQUENCE
    push_der_length(&mut document, inner.len());
    document.extend_from_slice(&inner);
    document
}

fn push_der_length(out: &mut Vec<u8>, length: usize) {
    match length {
        0..=0x7f => out.push(length as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, length as u8]),
        _ => {
            let length = u16::try_from(length).expect("parse_key admits at most MAX_SEC1_LEN");
            out.push(0x82);
            out.extend_from_slice(&length.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Throwaway keys made for this test: one by Helm's `genPrivateKey "ecdsa"` (SEC1 with the
    // curve parameters) and a P-384 one by `openssl ecparam -genkey`; PKCS#8 keys are generated.
    const HELM_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIHeIpwJUQMzS9GaIuzGEi8wGjzdDBLms79ijMwzBgMnJoAoGCCqGSM49
AwEHoUQDQgAE2J1ATshyNRjORWp0l4T4blab63WCQUj6rIKipjzqcWqEav8Dfusr
N+Qi5yEBct83W0ZlsK0K7zsZg7baDYqkWg==
-----END EC PRIVATE KEY-----
";

    #[test]
    fn a_sec1_key_as_helm_writes_it_loads_and_signs() {
        let key = parse_key(HELM_SEC1.as_bytes()).expect("the SEC1 key loads");
        // The published key is the one in the PEM (its public point is embedded there).
        let jwk = key.jwk();
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["x"], "2J1ATshyNRjORWp0l4T4blab63WCQUj6rIKipjzqcWo");
    }

    #[test]
    fn a_pkcs8_key_still_loads_as_the_same_key() {
        use base64::Engine;
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .expect("the system random source works");
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        let from_pem = parse_key(pem.as_bytes()).expect("the PKCS#8 key loads");
        let direct = SigningKey::from_pkcs8(der.as_ref()).expect("the DER loads");
        assert_eq!(from_pem.kid, direct.kid);
    }

    #[test]
    fn other_pem_documents_and_curves_are_refused() {
        let certificate = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(parse_key(certificate.as_bytes()).is_err());
        assert!(parse_key(b"not a key").is_err());
        let p384 = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDDbeU4X5tDqBw/g0XzBCxpGcvp58d1VB3i99IsbB72GJVmFsU0LRj1o
5gAkfB2cUDigBwYFK4EEACKhZANiAAT7OouLRxMtrs3iCf6srgLU0G0K1XFf/rLd
ArjBwKa3VrKr+i5BpjnE9eghXPxG+44e+lJJODJcuFDEfrynXNglpD5sr5gZhbuv
scn+beFYdOeKOVMK9nTlbdxtVi5ORog=
-----END EC PRIVATE KEY-----
";
        assert!(
            parse_key(p384.as_bytes()).is_err(),
            "only P-256 signs ES256"
        );
    }

    #[test]
    fn an_oversized_ec_key_is_refused_not_a_crash() {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(vec![0x30; 70_000]);
        let pem = format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n");
        let refused = parse_key(pem.as_bytes()).err().expect("refused");
        assert!(refused.contains("not a P-256 key"), "{refused}");
    }
}
