//! Every integration test in one binary: one link instead of one per file keeps the build fast
//! and the target directory small (separate binaries each carried the whole dependency tree).

mod support;

mod admin;
mod bearer;
mod binary;
mod browser;
mod chart;
mod client_connections;
mod controller;
mod crds;
mod docs;
mod framing;
mod gateway;
mod gateway_controller;
mod grpc;
mod layers;
mod policy;
mod proxy;
mod reload;
mod sessions;
mod signin;
mod tls;
mod tunnel;
