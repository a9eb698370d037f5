//! A scripted OpenID provider for the ID tokens a real provider will not issue: a wrong nonce, a
//! signature by a key it does not publish, `alg: none`, HS256 keyed with the public key, an
//! embedded `jwk`, any claim. It serves discovery and its key set like any provider (counting key
//! set fetches), and its token endpoint answers with whatever token the test asks for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// How a token is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// ES256 with the published key: a valid signature.
    Published,
    /// ES256 with another key, under the published key's `kid`.
    OtherKey,
    /// ES256 with the published key but a `kid` the key set does not hold.
    UnknownKid,
    /// ES256 with the key [`ForgingIdp::rotate`] publishes (`kid` `k2`): unknown until then.
    Rotated,
    /// EdDSA (Ed25519) with a published key.
    EdDsa,
    /// PS256 (RSA-PSS) with a published key.
    Ps256,
    /// `alg: none`, no signature.
    None,
    /// HS256 keyed with the published public key's bytes.
    HmacWithPublicKey,
    /// Another key, carried in the header as `jwk` (and no `kid`).
    EmbeddedJwk,
}

/// How the token endpoint's next token is made.
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
    keys: Arc<Keys>,
    jwks_fetches: Arc<AtomicUsize>,
}

struct Keys {
    published: EcdsaKeyPair,
    other: EcdsaKeyPair,
    /// Published under [`ROTATED_KID`] once `rotation_published` is set.
    rotated: EcdsaKeyPair,
    rotation_published: std::sync::atomic::AtomicBool,
    ed25519: ring::signature::Ed25519KeyPair,
    rsa: ring::signature::RsaKeyPair,
}

/// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA`), and its
/// modulus as a JWK `n`: ring signs with RSA keys but cannot make them.
const RSA_TEST_KEY: &str = include_str!("rsa_test_key.pem");
const RSA_TEST_KEY_N: &str = "mAKjeGDzW5FXOVN8Kg0-RTYgLaT2SnmmzD1_EqHqc2zm_QRHQVk30TlYwqz6rP-vQ6LLKFsh2pIlDLa9GtlupoPBMBUOs5CJd0ht3Kjb0xp0trZrUIZUKUZ4HGqczCUBDMN4vEeHr-EtLmEV_A0Zj8isbKdVn35hQ_sUEaSXZwR95rMe0F0BwGbBw8vI8gcpGdZmEWbWlbqG4Qof3fYi-AZiXZY_mYdysVALRhyvyIDKiHdHxltfzN_GaioHZKfxcAd4-U72yCURX7-t2uMjuxxNqr8rACcL9ycX24MafsACqwV47_cRH6YFTCjXR_7aaE0O1fzkBf9pz-7cXfJPnw";

const KID: &str = "k1";
const ROTATED_KID: &str = "k2";
const ED25519_KID: &str = "k-ed";
const RSA_KID: &str = "k-ps";

fn published_jwks(keys: &Keys) -> serde_json::Value {
    let mut published = vec![
        jwk(&keys.published, Some(KID)),
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": ED25519_KID,
            "x": URL_SAFE_NO_PAD.encode(keys.ed25519.public_key().as_ref()),
        }),
        serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "PS256", "kid": RSA_KID,
            "n": RSA_TEST_KEY_N, "e": "AQAB",
        }),
    ];
    if keys.rotation_published.load(Ordering::SeqCst) {
        published.push(jwk(&keys.rotated, Some(ROTATED_KID)));
    }
    serde_json::json!({ "keys": published })
}

fn key() -> EcdsaKeyPair {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap()
}

fn jwk(pair: &EcdsaKeyPair, kid: Option<&str>) -> serde_json::Value {
    let point = pair.public_key().as_ref();
    let mut jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl ForgingIdp {
    pub fn next_token(&self, token: NextToken) {
        *self.next.lock().unwrap() = Some(token);
    }

    /// Publishes a second key, as a provider rotating its keys does.
    pub fn rotate(&self) {
        self.keys.rotation_published.store(true, Ordering::SeqCst);
    }

    /// Stops publishing the second key again.
    pub fn retire_rotated(&self) {
        self.keys.rotation_published.store(false, Ordering::SeqCst);
    }

    /// How many times the key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims a valid token of this issuer has for `audience`; tests change what they test.
    pub fn claims(&self, audience: &str, subject: &str) -> serde_json::Value {
        let now = now();
        serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": audience,
            "iat": now, "exp": now + 300,
            "email": format!("{subject}@example.com"), "email_verified": true,
        })
    }

    /// A token with `claims`, signed as `signing` says.
    pub fn mint(&self, claims: &serde_json::Value, signing: Signing) -> String {
        let header = match signing {
            Signing::None => serde_json::json!({"alg": "none", "typ": "JWT"}),
            Signing::HmacWithPublicKey => {
                serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": KID})
            }
            Signing::EmbeddedJwk => serde_json::json!({
                "alg": "ES256", "typ": "JWT", "jwk": jwk(&self.keys.other, None),
            }),
            Signing::UnknownKid => {
                serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "rotated-away"})
            }
            Signing::Published | Signing::OtherKey => {
                serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": KID})
            }
            Signing::Rotated => {
                serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": ROTATED_KID})
            }
            Signing::EdDsa => serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": ED25519_KID}),
            Signing::Ps256 => serde_json::json!({"alg": "PS256", "typ": "JWT", "kid": RSA_KID}),
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match signing {
            Signing::None => Vec::new(),
            Signing::HmacWithPublicKey => {
                let key = ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    self.keys.published.public_key().as_ref(),
                );
                ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
            }
            Signing::Published | Signing::UnknownKid => self.es256(&self.keys.published, &input),
            Signing::OtherKey | Signing::EmbeddedJwk => self.es256(&self.keys.other, &input),
            Signing::Rotated => self.es256(&self.keys.rotated, &input),
            Signing::EdDsa => self.keys.ed25519.sign(input.as_bytes()).as_ref().to_vec(),
            Signing::Ps256 => {
                let mut signature = vec![0; self.keys.rsa.public().modulus_len()];
                self.keys
                    .rsa
                    .sign(
                        &ring::signature::RSA_PSS_SHA256,
                        &SystemRandom::new(),
                        input.as_bytes(),
                        &mut signature,
                    )
                    .unwrap();
                signature
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn es256(&self, key: &EcdsaKeyPair, input: &str) -> Vec<u8> {
        key.sign(&SystemRandom::new(), input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

pub async fn start() -> ForgingIdp {
    let keys = Arc::new(Keys {
        published: key(),
        other: key(),
        rotated: key(),
        rotation_published: Default::default(),
        ed25519: {
            let pkcs8 =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        },
        rsa: {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(RSA_TEST_KEY.as_bytes())
                .unwrap();
            ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap()
        },
    });
    let next: Arc<Mutex<Option<NextToken>>> = Arc::default();
    let issuer: Arc<Mutex<String>> = Arc::default();
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let addr: SocketAddr = {
        let (keys, next, issuer, fetches) = (
            keys.clone(),
            next.clone(),
            issuer.clone(),
            jwks_fetches.clone(),
        );
        super::backends::serve_http(
            move |_peer, request| {
                let (keys, next, issuer, fetches) =
                    (keys.clone(), next.clone(), issuer.clone(), fetches.clone());
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
                            "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "PS256"],
                        }),
                        "/jwks" => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            published_jwks(&keys)
                        }
                        // kube-iap's credentials probe redeems a code nobody issued.
                        "/token" if next.lock().unwrap().is_none() => {
                            serde_json::json!({"error": "invalid_grant"})
                        }
                        "/token" => {
                            let token = next
                                .lock()
                                .unwrap()
                                .clone()
                                .expect("the test set the next token");
                            let forger = ForgingIdp {
                                issuer: issuer.clone(),
                                next: next.clone(),
                                keys: keys.clone(),
                                jwks_fetches: fetches.clone(),
                            };
                            let mut claims = forger.claims(&token.audience, "forged-user");
                            claims["nonce"] = token.nonce.clone().into();
                            let signing = if token.published_key {
                                Signing::Published
                            } else {
                                Signing::OtherKey
                            };
                            serde_json::json!({
                                "access_token": "opaque",
                                "token_type": "Bearer",
                                "expires_in": 300,
                                "id_token": forger.mint(&claims, signing),
                            })
                        }
                        _ => serde_json::json!({"error": "not_found"}),
                    };
                    let refused = body.get("error").is_some();
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    if refused {
                        *response.status_mut() = http::StatusCode::BAD_REQUEST;
                    }
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
    ForgingIdp {
        issuer: url,
        next,
        keys,
        jwks_fetches,
    }
}
