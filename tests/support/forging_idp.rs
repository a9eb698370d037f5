//! A scripted OpenID provider for the ID tokens a real provider will not issue: a wrong nonce, a
//! signature by a key it does not publish. It serves discovery and its key set like any provider,
//! and its token endpoint answers with whatever token the test asks for, signed ES256 by hand.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// How the next token is made.
#[derive(Clone, Debug)]
pub struct NextToken {
    pub nonce: String,
    /// Sign with the published key (true) or with another one under the published key's id.
    pub published_key: bool,
    pub audience: String,
}

pub struct ForgingIdp {
    pub issuer: String,
    next: Arc<Mutex<Option<NextToken>>>,
}

impl ForgingIdp {
    pub fn next_token(&self, token: NextToken) {
        *self.next.lock().unwrap() = Some(token);
    }
}

struct Keys {
    published: EcdsaKeyPair,
    other: EcdsaKeyPair,
}

fn key() -> EcdsaKeyPair {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap()
}

pub async fn start() -> ForgingIdp {
    let keys = Arc::new(Keys {
        published: key(),
        other: key(),
    });
    let next: Arc<Mutex<Option<NextToken>>> = Arc::default();
    let issuer: Arc<Mutex<String>> = Arc::default();
    let addr: SocketAddr = {
        let (keys, next, issuer) = (keys.clone(), next.clone(), issuer.clone());
        super::backends::serve_http(
            move |_peer, request| {
                let (keys, next, issuer) = (keys.clone(), next.clone(), issuer.clone());
                async move {
                    let issuer = issuer.lock().unwrap().clone();
                    let body = match request.uri().path() {
                        "/.well-known/openid-configuration" => serde_json::json!({
                            "issuer": issuer,
                            "authorization_endpoint": format!("{issuer}/auth"),
                            "token_endpoint": format!("{issuer}/token"),
                            "jwks_uri": format!("{issuer}/jwks"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["ES256"],
                        }),
                        "/jwks" => {
                            let point = keys.published.public_key().as_ref();
                            serde_json::json!({"keys": [{
                                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                            }]})
                        }
                        "/token" => {
                            let token = next.lock().unwrap().clone().expect("the test set the next token");
                            let signer = if token.published_key { &keys.published } else { &keys.other };
                            serde_json::json!({
                                "access_token": "opaque",
                                "token_type": "Bearer",
                                "expires_in": 300,
                                "id_token": sign(signer, &issuer, &token),
                            })
                        }
                        _ => serde_json::json!({"error": "not_found"}),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok(response)
                }
            },
            Arc::new(AtomicUsize::new(0)),
        )
        .await
    };
    let url = format!("http://127.0.0.1:{}", addr.port());
    *issuer.lock().unwrap() = url.clone();
    ForgingIdp { issuer: url, next }
}

fn sign(key: &EcdsaKeyPair, issuer: &str, token: &NextToken) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let claims = serde_json::json!({
        "iss": issuer, "sub": "forged-user", "aud": token.audience,
        "iat": now, "exp": now + 300, "nonce": token.nonce,
        "email": "forged@example.com", "email_verified": true,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}
