//! Authentication pieces of the data plane: what to do with a request that carries no identity,
//! where a user may land after sign-in, and the session cookie. Like the proxy, this layer sees
//! only plain types, never Kubernetes ones.

pub mod assertion;
pub mod bearer;
pub mod cookies;
pub mod decision;
pub mod expiring;
pub mod id_token;
pub mod idp_http;
pub mod login;
pub mod providers;
pub mod redirect;
pub mod session;
pub mod session_cache;
