//! Verifying an OpenID Connect ID token: signature (by the issuer's published keys, asymmetric
//! algorithms only), issuer, audience, expiry with bounded clock skew and, for a sign-in, the
//! nonce. One place, used by the sign-in callback and by bearer tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenVerifier, IssuerUrl,
    JsonWebKeySet, Nonce, NonceVerifier, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use super::providers::{KeySource, Providers, describe};
use crate::model::{Identity, OidcClient};

/// Clocks of the proxy and the issuers may disagree by this much.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The subject prefix of Kubernetes service-account tokens.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Every claim outside the standard ones, so the configured groups claim can be read by name.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for ExtraClaims {}

type Token = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Who the token says signed in (every group under the client's groups claim; a service account
/// only for a Kubernetes token from a trusted issuer), and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub identity: Identity,
    /// When the token expires, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token failed verification: {0}")]
    Invalid(String),
    #[error(transparent)]
    ProviderUnavailable(#[from] super::providers::DiscoveryFailed),
}

/// What a token must satisfy.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub keys: KeySource,
    /// Accepted `aud` values: the token must name at least one.
    pub audiences: Vec<&'a str>,
    pub groups_claim: Option<&'a str>,
    /// Whether Kubernetes service-account subjects become service-account identities.
    pub workload: bool,
    /// Whether a token without `email_verified` has a verified email (the OAuthClient's
    /// `assumeEmailVerified`; never for workload issuers).
    pub assume_email_verified: bool,
}

impl<'a> Expected<'a> {
    /// An ID token of `client`'s own provider, for `client_id` or one of its extra audiences.
    pub fn for_client(client: &'a OidcClient) -> Self {
        Expected {
            issuer: &client.issuer,
            keys: KeySource::Discovery(client.issuer.clone()),
            audiences: std::iter::once(client.client_id.as_str())
                .chain(client.audiences.iter().map(String::as_str))
                .collect(),
            groups_claim: Some(&client.groups_claim),
            workload: false,
            assume_email_verified: client.assume_email_verified,
        }
    }

    /// Whichever of `client`'s issuers minted `token` (by its unverified `iss`); `None` when
    /// none of them did.
    pub fn for_bearer(client: &'a OidcClient, token: &str) -> Option<Self> {
        let issuer = unverified_issuer(token)?;
        if issuer == client.issuer {
            return Some(Expected::for_client(client));
        }
        let trusted = client
            .trusted_issuers
            .iter()
            .find(|trusted| trusted.issuer == issuer)?;
        Some(Expected {
            issuer: &trusted.issuer,
            keys: KeySource::for_issuer(&trusted.issuer, trusted.jwks_uri.as_deref()),
            audiences: trusted.audiences.iter().map(String::as_str).collect(),
            groups_claim: None,
            workload: true,
            assume_email_verified: false,
        })
    }
}

/// Verifies `token`. A token whose key is unknown triggers one (rate-limited) refresh of the
/// issuer's keys, so an issuer can rotate keys without failing sign-ins.
pub async fn verify(
    providers: &Providers,
    expected: &Expected<'_>,
    token: &str,
    nonce: Option<&Nonce>,
) -> Result<VerifiedIdentity, TokenError> {
    let parsed: Token = token
        .parse()
        .map_err(|error: serde_json::Error| TokenError::Malformed(error.to_string()))?;
    let found = providers.keys(&expected.keys).await?;
    match check(&parsed, expected, found.keys(), nonce) {
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => {
            let refreshed = providers.refresh_keys(&expected.keys).await?;
            check(&parsed, expected, refreshed.keys(), nonce)
        }
        other => other,
    }
    .map_err(|error| TokenError::Invalid(describe(&error)))
}

/// Verifies `token` against keys already at hand, with no network and no refresh: for
/// benchmarks and tools.
pub fn verify_with_keys(
    expected: &Expected<'_>,
    token: &str,
    keys: &JsonWebKeySet<CoreJsonWebKey>,
) -> Result<VerifiedIdentity, TokenError> {
    let parsed: Token = token
        .parse()
        .map_err(|error: serde_json::Error| TokenError::Malformed(error.to_string()))?;
    check(&parsed, expected, keys, None).map_err(|error| TokenError::Invalid(describe(&error)))
}

fn check(
    token: &Token,
    expected: &Expected<'_>,
    keys: &JsonWebKeySet<CoreJsonWebKey>,
    nonce: Option<&Nonce>,
) -> Result<VerifiedIdentity, ClaimsVerificationError> {
    let issuer = IssuerUrl::new(expected.issuer.to_string())
        .map_err(|error| ClaimsVerificationError::Other(error.to_string()))?;
    let skewed_now = || chrono::Utc::now() - CLOCK_SKEW;
    // No client secret: HMAC-signed tokens are refused, only the issuer's published keys count.
    // The audience is checked below, against every accepted value.
    let verifier =
        IdTokenVerifier::new_public_client(ClientId::new(String::new()), issuer, keys.clone())
            .require_audience_match(false)
            .set_allowed_algs([
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
                CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                CoreJwsSigningAlgorithm::RsaSsaPssSha384,
                CoreJwsSigningAlgorithm::RsaSsaPssSha512,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::EcdsaP384Sha384,
                CoreJwsSigningAlgorithm::EdDsa,
            ])
            .set_time_fn(skewed_now)
            .set_issue_time_verifier_fn(|issued_at| {
                if issued_at > chrono::Utc::now() + CLOCK_SKEW {
                    Err(format!("issued in the future ({issued_at})"))
                } else {
                    Ok(())
                }
            });
    let claims = match nonce {
        Some(nonce) => token.claims(&verifier, nonce)?,
        None => token.claims(&verifier, NoNonce)?,
    };
    let audiences = claims.audiences();
    if !audiences
        .iter()
        .any(|audience| expected.audiences.contains(&audience.as_str()))
    {
        return Err(ClaimsVerificationError::InvalidAudience(format!(
            "{:?} names none of the accepted audiences",
            audiences.iter().map(|a| a.as_str()).collect::<Vec<_>>()
        )));
    }
    let extra = &claims.additional_claims().0;
    if let Some(not_before) = extra.get("nbf").and_then(serde_json::Value::as_i64) {
        let latest = (chrono::Utc::now() + CLOCK_SKEW).timestamp();
        if not_before > latest {
            return Err(ClaimsVerificationError::Other(
                "the token is not valid yet (nbf)".into(),
            ));
        }
    }
    let groups = match expected.groups_claim.and_then(|name| extra.get(name)) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let subject = claims.subject().to_string();
    let service_account = if expected.workload && extra.contains_key("kubernetes.io") {
        subject
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .map(|(namespace, name)| format!("{namespace}/{name}"))
    } else {
        None
    };
    Ok(VerifiedIdentity {
        identity: Identity {
            subject,
            email: claims.email().map(|email| email.to_string()),
            email_verified: claims
                .email_verified()
                .unwrap_or(expected.assume_email_verified),
            issuer: claims.issuer().to_string(),
            groups,
            service_account,
        },
        expires_at: u64::try_from(claims.expiration().timestamp()).unwrap_or(0),
    })
}

/// The `iss` claim of a JWT, read without verifying anything: only to pick which issuer's
/// keys to verify it with.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// Bearer tokens carry no nonce to check.
struct NoNonce;

impl NonceVerifier for NoNonce {
    fn verify(self, _nonce: Option<&Nonce>) -> Result<(), String> {
        Ok(())
    }
}
