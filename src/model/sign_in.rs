//! Who signs users in for a route: the OpenID Connect client of its policy, as plain values.

use std::time::Duration;

/// The session length when a policy does not set `session.maxAge` (Google IAP's default too).
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(3600);

/// An OAuth client secret. Its `Debug` never shows the value, so it cannot leak into a log line
/// that prints a route or table.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(value: impl Into<String>) -> Self {
        ClientSecret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// An OpenID Connect client registration (an OAuthClient resource with its secret resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcClient {
    /// `namespace/name` of the OAuthClient: the name in logs and the key of its health.
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub scopes: Vec<String>,
    /// The ID token claim that lists the user's groups.
    pub groups_claim: String,
    /// Audiences accepted in bearer ID tokens besides `client_id`.
    pub audiences: Vec<String>,
    /// Other issuers whose bearer tokens are accepted (workload identity).
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// A token of this client's issuer without `email_verified` counts as verified.
    pub assume_email_verified: bool,
    /// A digest of the settings above that a bearer token is checked against, computed once
    /// when the table is built: verified tokens are cached under it, so an edited client never
    /// reuses a verdict it would not reach (see `auth::bearer::verification_scope`).
    pub verification_scope: [u8; 32],
}

/// An issuer of workload tokens and the audiences accepted from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedIssuer {
    pub issuer: String,
    /// Where its keys are; `None`: found by OpenID discovery.
    pub jwks_uri: Option<String>,
    pub audiences: Vec<String>,
}

/// What the backend of a route is told about the caller, besides the plain identity headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendIdentity {
    /// `aud` of the signed assertion.
    pub assertion_audience: String,
    pub include_groups: bool,
    pub google_compatible: bool,
    /// Forward `Authorization` even when it carried the credential kube-iap used.
    pub pass_authorization: bool,
}

/// How a route signs users in.
#[derive(Debug, PartialEq, Eq)]
pub struct SignIn {
    pub client: std::sync::Arc<OidcClient>,
    /// How long a session started on this route lasts.
    pub session_max_age: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_client_secret() {
        let client = OidcClient {
            name: "ns/idp".into(),
            issuer: "https://idp.example".into(),
            client_id: "app".into(),
            client_secret: ClientSecret::new("s3cr3t-value"),
            scopes: vec![],
            groups_claim: "groups".into(),
            audiences: vec![],
            trusted_issuers: vec![],
            assume_email_verified: false,
            verification_scope: [0; 32],
        };
        let printed = format!("{client:?}");
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }
}
