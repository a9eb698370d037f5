//! A real gRPC server and client for tests: `tests/grpc/server.mjs` and `client.mjs` (npm
//! `@grpc/grpc-js`), a gRPC implementation independent of the proxy's hyper stack.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// An echo server on 127.0.0.1, stopped when dropped. It serves `kube_iap.test.Echo` (`Say`,
/// and `Count`, which streams) and the same methods under any other service names given.
pub struct GrpcServer {
    pub port: u16,
    _child: Child,
}

pub async fn server(name: &str, other_services: &[&str]) -> GrpcServer {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        Path::new(root).join("node_modules/@grpc/grpc-js").is_dir(),
        "the test gRPC server is not installed: run `npm ci` (scripts/test.sh does)"
    );
    let mut command = Command::new("node");
    command
        .arg(format!("{root}/tests/grpc/server.mjs"))
        .args(["--name", name]);
    if !other_services.is_empty() {
        command.args(["--services", &other_services.join(",")]);
    }
    // Its stdin stays open while it runs: it exits when stdin closes.
    command.stdin(Stdio::piped()).stderr(Stdio::inherit());
    let (child, announced) = super::node::start(command, "the gRPC server").await;
    let port = announced["port"].as_u64().expect("port") as u16;
    GrpcServer {
        port,
        _child: child,
    }
}

/// Makes `calls` (see `tests/grpc/client.mjs`) to `target` as `authority`, over TLS trusting
/// `ca` (a PEM file) when given, else over h2c; one result per call.
pub async fn call(
    target: SocketAddr,
    authority: &str,
    ca: Option<&Path>,
    calls: Value,
) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new("node");
    command
        .arg(format!("{root}/tests/grpc/client.mjs"))
        .args(["--target", &target.to_string(), "--authority", authority])
        .args(["--calls", &calls.to_string()]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the gRPC client finishes within 60 s")
        .expect("node runs");
    assert!(
        output.status.success(),
        "the gRPC client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line per call"))
        .collect()
}
