use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::IapPolicyStatus;

/// The member syntax every access list accepts. It is an OpenAPI `pattern` on each member rather
/// than a CEL rule: the API server estimates a CEL regex match at (string length × pattern length)
/// per member, per rule, which no useful list bound fits into its budget, while a pattern costs
/// nothing against it and its error names the member at fault (`spec.access[0].members[1]`).
const MEMBER_PATTERN: &str = "^(user:[^@ ]+@[^@ ]+|group:[^ ]+|domain:[^@ ]+[.][^@ ]+|serviceAccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?|allAuthenticatedUsers|allUsers)$";

/// What kube-iap protects and who gets in: hosts and paths, the backend Service, the OAuth
/// client users sign in with, and the access rules.
// kube's printcolumn(...) lists repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kube-iap.io",
    version = "v1alpha1",
    kind = "IapPolicy",
    plural = "iappolicies",
    shortname = "iap",
    namespaced,
    status = "IapPolicyStatus",
    doc = "Protects hosts and paths behind sign-in and decides who may reach the backend.",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
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
pub struct IapPolicySpec {
    /// The OAuthClient (same namespace) users sign in with and bearer tokens are checked against.
    pub oauth_client_ref: LocalObjectRef,
    /// Host names served under this policy (no port, no scheme). Services annotated with
    /// `kube-iap.io/policy` may add their own host with `kube-iap.io/host`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub hosts: Vec<String>,
    /// Path prefixes served under this policy, matched segment by segment on the normalised path.
    #[serde(default = "default_paths")]
    #[schemars(length(max = 64), inner(regex(pattern = "^/"), length(max = 1024)))]
    pub paths: Vec<String>,
    /// The Service requests are forwarded to. Optional when Services point at this policy with the
    /// `kube-iap.io/policy` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendRef>,
    /// TLS certificate for the hosts, from a `kubernetes.io/tls` Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Access rules: a request is allowed when the members of some rule match its identity and
    /// all of that rule's conditions hold. No rule means nobody gets in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub access: Vec<AccessRule>,
    /// Deny rules, same shape as `access`: a request any deny rule matches is refused, whatever
    /// the access rules say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub deny: Vec<AccessRule>,
    /// Path prefixes forwarded without any identity (identity headers are still stripped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = "^/"), length(max = 1024)))]
    pub public_paths: Vec<String>,
    /// Cross-origin request settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// Browser session settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionConfig>,
    /// Requests per minute this policy accepts on each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Who may open TCP tunnels through `/_iap/tunnel`, and to which ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_forwarding: Option<TcpForwarding>,
    /// Forward the `Authorization` header to the backend even when it carried the bearer token
    /// kube-iap authenticated the request with (by default that credential is removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_authorization_header: bool,
    /// The signed identity header `x-kube-iap-jwt-assertion` sent to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_headers: Option<SignedHeaders>,
    /// Also send Google IAP's `x-goog-authenticated-user-email` and
    /// `x-goog-authenticated-user-id` headers (values prefixed `kube-iap:`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub google_compatible_headers: bool,
    /// Gateway API objects this policy protects (policy attachment): a Gateway protects every
    /// route attached to it (or to its listener `sectionName`), an HTTPRoute or GRPCRoute every
    /// rule of it (or its rule `sectionName`). The most specific attachment wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<PolicyTargetRef>,
}

/// A Gateway API object a policy attaches to, in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io`.
    #[schemars(regex(pattern = "^gateway\\.networking\\.k8s\\.io$"))]
    pub group: String,
    /// `Gateway`, `HTTPRoute` or `GRPCRoute`.
    #[schemars(regex(pattern = "^(Gateway|HTTPRoute|GRPCRoute)$"))]
    pub kind: String,
    /// Name of the Gateway or route.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A listener of the Gateway, or a rule of the route, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Settings of the signed identity assertion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedHeaders {
    /// The assertion's `aud`. Default: `/namespaces/NAMESPACE/iappolicies/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Include the user's groups (those the policies on the host name) in a `groups` claim.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_groups: bool,
}

fn default_paths() -> Vec<String> {
    vec!["/".to_string()]
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A Service port in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackendRef {
    /// Name of the Service.
    #[schemars(length(min = 1))]
    pub service: String,
    /// The Service port (its `port` number, not the target port).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// TLS settings of the policy's hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// A `kubernetes.io/tls` Secret (same namespace) with `tls.crt` and `tls.key`.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// One access rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccessRule {
    /// Who the rule admits: `user:EMAIL`, `group:NAME`, `domain:DOMAIN`,
    /// `serviceAccount:NAMESPACE/NAME`, `allAuthenticatedUsers` or `allUsers`.
    #[schemars(length(min = 1, max = 256), inner(regex(pattern = MEMBER_PATTERN), length(max = 320)))]
    pub members: Vec<String>,
    /// Conditions that must all hold for the rule to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<AccessConditions>,
}

/// Conditions of an access rule; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.after) || !has(self.before) || timestamp(self.after) < timestamp(self.before)").message("after must be earlier than before"))]
pub struct AccessConditions {
    /// Path prefixes of the normalised request path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = "^/"), length(max = 1024)))]
    pub paths: Vec<String>,
    /// HTTP methods, upper case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = "^[A-Z]+$"), length(max = 32)))]
    pub methods: Vec<String>,
    /// Client address ranges in CIDR notation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub source_cidrs: Vec<String>,
    /// The rule applies only from this time on (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), length(max = 64))]
    pub after: Option<String>,
    /// The rule applies only before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), length(max = 64))]
    pub before: Option<String>,
}

/// Cross-origin request settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsConfig {
    /// Forward CORS preflight requests (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) to the backend without authentication.
    #[serde(default)]
    pub allow_http_options: bool,
}

/// Browser session settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionConfig {
    /// How long a sign-in lasts, as a duration such as `1h` or `30m` (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<kube::core::Duration>,
}

/// Rate limit of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per minute accepted on each replica; above it requests get HTTP 429.
    #[serde(default = "default_requests_per_minute")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
}

/// Google IAP's per-project limit.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 360_000;

fn default_requests_per_minute() -> u32 {
    DEFAULT_REQUESTS_PER_MINUTE
}

/// TCP forwarding through `/_iap/tunnel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TcpForwarding {
    /// Who may open tunnels (same syntax as access members).
    #[schemars(length(max = 256), inner(regex(pattern = MEMBER_PATTERN), length(max = 320)))]
    pub members: Vec<String>,
    /// Backend ports tunnels may reach.
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
}
