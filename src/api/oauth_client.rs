use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OAuthClientStatus;

/// An OpenID Connect client registration at the organisation's identity provider. IapPolicies name
/// it in `oauthClientRef`; browsers sign in through it and bearer ID tokens are checked against it.
// kube's printcolumn(...) lists repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kube-iap.io",
    version = "v1alpha1",
    kind = "OAuthClient",
    plural = "oauthclients",
    shortname = "oac",
    namespaced,
    status = "OAuthClientStatus",
    doc = "An OpenID Connect client registration used by IapPolicies to sign users in.",
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.issuer"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Code", type_ = "integer", json_path = ".status.errorCode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientSpec {
    /// OpenID Connect issuer URL; `<issuer>/.well-known/openid-configuration` must answer.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// The client ID registered at the identity provider. Empty means the client is not usable
    /// yet (error code 7).
    #[serde(default)]
    pub client_id: String,
    /// The Secret key (same namespace) holding the client secret. The secret is never copied into
    /// status, logs or pages; status shows its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// OAuth scopes requested at sign-in.
    #[serde(default = "default_scopes")]
    #[schemars(length(max = 32), inner(length(max = 256)))]
    pub scopes: Vec<String>,
    /// The ID token claim that lists the user's groups, for `group:` members.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Extra audiences accepted in bearer ID tokens besides `clientId`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 1024)))]
    pub audiences: Vec<String>,
    /// Other issuers whose tokens are accepted as bearer tokens: the cluster's service-account
    /// issuer (a Pod's projected token authenticates as `serviceAccount:NAMESPACE/NAME`) or any
    /// OpenID issuer such as a CI system's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Treat the `email` claim as verified when a token carries no `email_verified` claim, so
    /// `user:` and `domain:` members can match. Microsoft Entra ID never sends `email_verified`.
    /// Turn it on only for a provider that itself controls every address it issues (your own
    /// tenant), never one where users choose their address. `email_verified: false` still
    /// never matches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assume_email_verified: bool,
}

/// An issuer of workload tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuer {
    /// The issuer exactly as tokens carry it in `iss`, e.g.
    /// `https://kubernetes.default.svc.cluster.local`.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// Where the issuer publishes its signing keys. By default they are found through
    /// `<issuer>/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Audiences accepted from this issuer, e.g. the `audience` of a projected token volume.
    #[schemars(length(min = 1, max = 32), inner(length(max = 1024)))]
    pub audiences: Vec<String>,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_string()
}
