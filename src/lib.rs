//! kube-iap: an Identity-Aware Proxy for Kubernetes.
//!
//! Layers, from the cluster to the wire:
//! - [`api`]: the custom resources (the only place besides [`index`] and [`source`] that knows
//!   Kubernetes types);
//! - [`source`]: where objects come from (a manifests folder, later the Kubernetes API);
//! - [`index`]: the pure translation of objects into a [`model::RoutingTable`] and statuses;
//! - [`model`]: the routing model the data plane reads;
//! - [`proxy`]: the data plane; it sees only [`model`] types;
//! - [`admin`]: health, readiness, metrics and status on their own port.

pub mod admin;
pub mod allocator;
pub mod api;
pub mod auth;
pub mod controller;
pub mod error_codes;
pub mod explain;
pub mod index;
pub mod login_client;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod publish;
pub mod serve;
pub mod shutdown;
pub mod source;
pub mod telemetry;
pub mod tunnel_client;
pub mod verify_assertion;
