//! `kube-iap verify-assertion`: checks an `x-kube-iap-jwt-assertion` the way a backend should,
//! and says exactly why a token is refused. For backend authors wiring up their own check.

use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{ClientId, IdToken, IdTokenVerifier, IssuerUrl, JsonWebKeySet, Nonce};

use crate::auth::id_token::ExtraClaims;
use crate::auth::providers::describe;

type Assertion = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The token's claims if it is a valid assertion for `audience` from `issuer` signed by one of
/// `jwks` (a JWKS document), else why not.
pub fn verify(
    token: &str,
    jwks: &str,
    audience: &str,
    issuer: &str,
) -> Result<serde_json::Value, String> {
    let keys: JsonWebKeySet<CoreJsonWebKey> = serde_json::from_str(jwks)
        .map_err(|error| format!("the key set is not a JWKS document: {error}"))?;
    let assertion: Assertion = token
        .trim()
        .parse()
        .map_err(|error| format!("not a JWT: {error}"))?;
    let issuer =
        IssuerUrl::new(issuer.to_string()).map_err(|error| format!("--issuer: {error}"))?;
    let verifier =
        IdTokenVerifier::new_public_client(ClientId::new(audience.to_string()), issuer, keys)
            .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256])
            .set_issue_time_verifier_fn(|issued_at| {
                if issued_at > chrono::Utc::now() + crate::auth::id_token::CLOCK_SKEW {
                    Err(format!("issued in the future ({issued_at})"))
                } else {
                    Ok(())
                }
            });
    assertion
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .map_err(|error| describe(&error))?;
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
        .map_err(|error| error.to_string())?;
    serde_json::from_slice(&bytes).map_err(|error| error.to_string())
}

/// Fetches the key set at `url` (bounded in time and size).
pub async fn fetch_jwks(url: &str) -> Result<String, String> {
    let http = crate::auth::idp_http::IdpHttp::new(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(10),
    );
    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|error| format!("--jwks: {error}"))?;
    let response = http
        .call(request)
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    String::from_utf8(response.into_body()).map_err(|_| format!("{url} did not answer text"))
}
