//! The signed identity assertion (`x-kube-iap-jwt-assertion`): an ES256 JWT that tells a backend
//! who is calling, which it can verify against the proxy's published keys (`/_iap/jwks.json`).
//!
//! Signing keys form a ring like session keys: the newest signs, every key is published. Keys
//! that leave the ring stay published until every assertion they signed has expired.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;

use crate::model::Identity;

/// Assertions are valid this long, as Google IAP's.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

pub struct SigningKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// A key from a PKCS#8 document (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`), named by a hash of its public key so every replica agrees.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|error| format!("not a P-256 PKCS#8 private key: {error}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        Ok(SigningKey { kid, pair })
    }

    pub fn generate() -> Self {
        let random = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .expect("the system random source works");
        SigningKey::from_pkcs8(der.as_ref()).expect("a generated key parses")
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn sign(&self, claims: &AssertionClaims<'_>) -> String {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing does not fail with a working random source");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// Signing keys, newest first. Its `Debug` shows key ids only.
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| &key.kid))
            .finish()
    }
}

impl SigningKeys {
    /// `None` for an empty list.
    pub fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(SigningKeys { keys })
    }

    pub fn newest(&self) -> &SigningKey {
        &self.keys[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter()
    }
}

/// A deliberately broken assertion, for `/_iap/secure_token_test?type=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// A valid assertion (`NOT_SET`).
    None,
    FutureIssue,
    PastExpiration,
    Issuer,
    Audience,
    Signature,
}

impl Breakage {
    pub fn parse(value: &str) -> Option<Breakage> {
        Some(match value {
            "NOT_SET" => Breakage::None,
            "FUTURE_ISSUE" => Breakage::FutureIssue,
            "PAST_EXPIRATION" => Breakage::PastExpiration,
            "ISSUER" => Breakage::Issuer,
            "AUDIENCE" => Breakage::Audience,
            "SIGNATURE" => Breakage::Signature,
            _ => return None,
        })
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    iat: u64,
    /// Equal to `iat`, so ordinary JWT libraries (which check `nbf` but not `iat`) refuse an
    /// assertion issued in the future.
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<&'a str>,
}

/// Everything an assertion says besides the identity.
pub struct AssertionContext<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub include_groups: bool,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Signs an assertion of `identity` (broken as `breakage` says) with the newest key.
pub fn sign(
    keys: &SigningKeys,
    identity: &Identity,
    context: &AssertionContext<'_>,
    breakage: Breakage,
) -> String {
    let lifetime = ASSERTION_LIFETIME.as_secs();
    let (iat, exp) = match breakage {
        Breakage::FutureIssue => (context.now + 3600, context.now + 3600 + lifetime),
        Breakage::PastExpiration => (context.now - 2 * lifetime, context.now - lifetime),
        _ => (context.now, context.now + lifetime),
    };
    let claims = AssertionClaims {
        iss: if breakage == Breakage::Issuer {
            "https://wrong-issuer.invalid"
        } else {
            context.issuer
        },
        aud: if breakage == Breakage::Audience {
            "/wrong/audience"
        } else {
            context.audience
        },
        sub: &identity.subject,
        email: identity.email.as_deref(),
        iat,
        nbf: iat,
        exp,
        groups: context.include_groups.then_some(identity.groups.as_slice()),
        service_account: identity.service_account.as_deref(),
    };
    let token = keys.newest().sign(&claims);
    if breakage != Breakage::Signature {
        return token;
    }
    // Flip bits in the middle of the signature: well-formed, wrong.
    let (input, signature) = token.rsplit_once('.').expect("a JWT has three parts");
    let mut raw = URL_SAFE_NO_PAD.decode(signature).expect("we encoded it");
    raw[10] ^= 0xff;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw))
}

/// The published key set: the current ring, plus keys that left it less than an assertion
/// lifetime (and the allowed clock skew) ago.
pub struct Jwks {
    published: Mutex<Vec<PublishedKey>>,
}

struct PublishedKey {
    kid: String,
    jwk: serde_json::Value,
    last_current: Instant,
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks {
            published: Mutex::new(Vec::new()),
        }
    }
}

impl Jwks {
    /// Records the keys of the current ring; keys no longer in it keep their last time.
    pub fn observe(&self, keys: &SigningKeys) {
        let now = Instant::now();
        let mut published = self.published.lock().expect("never poisoned");
        for key in keys.iter() {
            match published.iter_mut().find(|known| known.kid == key.kid) {
                Some(known) => known.last_current = now,
                None => published.push(PublishedKey {
                    kid: key.kid.clone(),
                    jwk: key.jwk(),
                    last_current: now,
                }),
            }
        }
        let keep_for = ASSERTION_LIFETIME + Duration::from_secs(120);
        published.retain(|known| now.duration_since(known.last_current) < keep_for);
    }

    /// The JWKS document: `current` first, then keys retired recently enough to still verify.
    pub fn document(&self, current: &SigningKeys) -> serde_json::Value {
        self.observe(current);
        let published = self.published.lock().expect("never poisoned");
        let mut keys: Vec<serde_json::Value> = current.iter().map(SigningKey::jwk).collect();
        keys.extend(
            published
                .iter()
                .filter(|known| !current.iter().any(|key| key.kid == known.kid))
                .map(|known| known.jwk.clone()),
        );
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            subject: "alice-sub".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            issuer: "https://idp".into(),
            groups: vec!["eng".into()],
            service_account: None,
        }
    }

    fn claims_of(token: &str) -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    fn verifies(keys: &SigningKeys, token: &str) -> bool {
        let (input, signature) = token.rsplit_once('.').unwrap();
        let point = keys.newest().pair.public_key().as_ref().to_vec();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .is_ok()
    }

    #[test]
    fn each_breakage_breaks_exactly_one_thing() {
        let keys = SigningKeys::new(vec![SigningKey::generate()]).unwrap();
        let context = AssertionContext {
            issuer: "kube-iap",
            audience: "/namespaces/ns/iappolicies/app",
            include_groups: true,
            now: 1_800_000_000,
        };
        let good = sign(&keys, &alice(), &context, Breakage::None);
        let claims = claims_of(&good);
        assert!(verifies(&keys, &good));
        assert_eq!(claims["iss"], "kube-iap");
        assert_eq!(claims["aud"], "/namespaces/ns/iappolicies/app");
        assert_eq!(claims["sub"], "alice-sub");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["groups"][0], "eng");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            600
        );

        let future = claims_of(&sign(&keys, &alice(), &context, Breakage::FutureIssue));
        assert!(future["iat"].as_u64().unwrap() > context.now + 60);
        let past = claims_of(&sign(&keys, &alice(), &context, Breakage::PastExpiration));
        assert!(past["exp"].as_u64().unwrap() < context.now);
        assert_ne!(
            claims_of(&sign(&keys, &alice(), &context, Breakage::Issuer))["iss"],
            "kube-iap"
        );
        assert_ne!(
            claims_of(&sign(&keys, &alice(), &context, Breakage::Audience))["aud"],
            claims["aud"]
        );
        let forged = sign(&keys, &alice(), &context, Breakage::Signature);
        assert_eq!(claims_of(&forged), claims);
        assert!(!verifies(&keys, &forged));
    }

    #[test]
    fn retired_keys_stay_published_and_current_keys_lead() {
        let jwks = Jwks::default();
        let old = SigningKeys::new(vec![SigningKey::generate()]).unwrap();
        let old_kid = old.newest().kid.clone();
        jwks.observe(&old);
        let new = SigningKeys::new(vec![SigningKey::generate()]).unwrap();
        let document = jwks.document(&new);
        let kids: Vec<&str> = document["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [new.newest().kid.as_str(), old_kid.as_str()]);
    }
}
