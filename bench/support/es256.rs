//! ES256 tokens for the benchmarks: a key pair, its key set, and tokens signed with it. Shared by
//! `examples/token_issuer.rs` and `benches/verify_token.rs` through `#[path]`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

pub const KID: &str = "bench-1";

pub fn key() -> EcdsaKeyPair {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
        .expect("random source");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .expect("a generated key parses")
}

pub fn jwks(pair: &EcdsaKeyPair) -> serde_json::Value {
    let point = pair.public_key().as_ref();
    serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]})
}

pub fn mint(pair: &EcdsaKeyPair, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": KID});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("signing works");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

pub fn claims(issuer: &str, audience: &str, lifetime_secs: u64) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    serde_json::json!({
        "iss": issuer, "aud": audience, "sub": "bench-robot",
        "email": "robot@example.com", "email_verified": true,
        "iat": now, "exp": now + lifetime_secs,
    })
}
