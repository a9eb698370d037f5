//! Verifying an OpenID Connect ID token: signature (by the provider's published keys), issuer,
//! audience, expiry and, for a sign-in, the nonce. One place, used by the sign-in callback.

use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenVerifier, IssuerUrl,
    JsonWebKeySet, Nonce, NonceVerifier, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use super::providers::{Providers, describe};
use crate::model::OidcClient;

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

/// Who the token says signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub issuer: String,
    /// Every group the token lists under the client's groups claim.
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the ID token is not a JWT: {0}")]
    Malformed(String),
    #[error("the ID token failed verification: {0}")]
    Invalid(String),
    #[error(transparent)]
    ProviderUnavailable(#[from] super::providers::DiscoveryFailed),
}

/// Verifies `token` for `client`. A token whose key is unknown triggers one (rate-limited)
/// refresh of the provider's keys, so a provider can rotate keys without failing sign-ins.
pub async fn verify(
    providers: &Providers,
    client: &OidcClient,
    token: &str,
    nonce: Option<&Nonce>,
) -> Result<VerifiedIdentity, TokenError> {
    let token: Token = token
        .parse()
        .map_err(|error: serde_json::Error| TokenError::Malformed(error.to_string()))?;
    let discovered = providers.metadata(&client.issuer).await?;
    match check(&token, client, discovered.metadata.jwks(), nonce) {
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => {
            let refreshed = providers.refresh_keys(&client.issuer).await?;
            check(&token, client, refreshed.metadata.jwks(), nonce)
        }
        other => other,
    }
    .map_err(|error| TokenError::Invalid(describe(&error)))
}

fn check(
    token: &Token,
    client: &OidcClient,
    keys: &JsonWebKeySet<CoreJsonWebKey>,
    nonce: Option<&Nonce>,
) -> Result<VerifiedIdentity, ClaimsVerificationError> {
    let issuer = IssuerUrl::new(client.issuer.clone())
        .map_err(|error| ClaimsVerificationError::Other(error.to_string()))?;
    let audiences = client.audiences.clone();
    // No client secret: HMAC-signed tokens are refused, only the provider's published keys count.
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(client.client_id.clone()),
        issuer,
        keys.clone(),
    )
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
    .set_other_audience_verifier_fn(move |audience| audiences.contains(audience));
    let claims = match nonce {
        Some(nonce) => token.claims(&verifier, nonce)?,
        None => token.claims(&verifier, NoNonce)?,
    };
    let groups = match claims.additional_claims().0.get(&client.groups_claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(VerifiedIdentity {
        subject: claims.subject().to_string(),
        email: claims.email().map(|email| email.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        issuer: claims.issuer().to_string(),
        groups,
    })
}

/// Bearer tokens carry no nonce to check.
struct NoNonce;

impl NonceVerifier for NoNonce {
    fn verify(self, _nonce: Option<&Nonce>) -> Result<(), String> {
        Ok(())
    }
}
