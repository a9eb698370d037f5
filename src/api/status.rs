use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an IapPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IapPolicyStatus {
    /// Conditions of the policy. `Ready` is `True` when every route of the policy is served as
    /// written; otherwise its message starts with `Error code N:` when a Google IAP error code applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Google IAP-style error code of the problem, absent when the policy is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How each Gateway API object named in `spec.targetRefs` took the policy, in the Gateway
    /// API's `PolicyAncestorStatus` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The status of a policy at one object it attaches to (Gateway API policy attachment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The object the policy is attached to.
    pub ancestor_ref: AncestorRef,
    /// `kube-iap.io/gateway-controller`.
    pub controller_name: String,
    /// `Accepted`, with reason `Accepted`, `Conflicted`, `TargetNotFound` or `Invalid`.
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
}

/// A Gateway API object, as a policy ancestor names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    /// API group of the object.
    pub group: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The listener or rule of the object, when the policy names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Observed state of an OAuthClient.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientStatus {
    /// Conditions of the client. `Ready` is `True` when the client is usable; otherwise its message
    /// starts with `Error code N:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Google IAP-style error code of the problem, absent when the client is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Hex SHA-256 of the client secret in use, so a rotation can be confirmed without ever
    /// revealing the secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_sha256: Option<String>,
    /// The endpoints the issuer's discovery document names, as kube-iap uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered: Option<DiscoveredEndpoints>,
}

/// Endpoints found through `<issuer>/.well-known/openid-configuration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredEndpoints {
    /// Where browsers are sent to sign in.
    pub authorization_endpoint: String,
    /// Where authorization codes are redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// Where the provider publishes its token signing keys.
    pub jwks_uri: String,
}
