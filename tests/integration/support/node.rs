//! Node.js helpers the tests run (the identity provider, the gRPC server): each prints one JSON
//! line when it is ready.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `command` and waits up to 20 s for its announcement; the child is killed when
/// dropped.
pub async fn start(mut command: Command, what: &str) -> (Child, serde_json::Value) {
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts (is Node.js installed?)");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{what} announces itself within 20 s"))
        .expect("stdout readable")
        .unwrap_or_else(|| panic!("{what} printed nothing"));
    let announced = serde_json::from_str(&first).expect("a JSON line");
    // Keep reading: a closed pipe would kill it at its next line of output.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, announced)
}
