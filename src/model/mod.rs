//! The routing model: plain domain types the data plane reads. Nothing here knows Kubernetes; the
//! [`crate::index`] builds these values from resources, and the proxy only ever sees them.

mod access;
mod backend;
mod filters;
mod identity;
pub mod path;
mod policy;
mod rate_limit;
mod route_match;
mod sign_in;
mod table;
mod tunnel;

pub use access::{AccessPolicy, Member, MemberParseError};
pub use backend::{Backend, NoUpstream, Upstream, WeightedPart};
pub use filters::{HeaderEdits, PathRewrite, Redirect, Rewrite, RouteFilters};
pub use identity::Identity;
pub use policy::{
    AccessRule, Condition, Conditions, Decision, Denial, RequestFacts, RuleList, RuleOutcome,
};
pub use rate_limit::{AddressLimit, RateLimit};
pub use route_match::{MatchConditions, Precedence, RequestView};
pub use sign_in::{
    BackendIdentity, ClientSecret, DEFAULT_SESSION_MAX_AGE, OidcClient, SignIn, TrustedIssuer,
};
pub use table::{
    Route, RouteAction, RoutingTable, RoutingTableBuilder, TlsCertificates, canonical_host,
};
pub use tunnel::{TunnelGrant, TunnelRefusal};
