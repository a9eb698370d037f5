//! The `kube-iap` binary itself, as a user runs it: its CLI, JSON logs with one access line per
//! request, and its memory while a 1 GiB upload streams through.

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use support::manifests::{self, write};
use support::{backends, get};

struct Binary {
    child: Child,
    http: SocketAddr,
    lines: mpsc::Receiver<serde_json::Value>,
    /// What it logged before it listened.
    startup: Vec<serde_json::Value>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral ports and reads the bound address from its `listening` log line.
fn start(manifests: &std::path::Path) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args(["serve", "--manifests"])
        .arg(manifests)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--no-https",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if sender.send(parsed).is_err() {
                return;
            }
        }
    });
    let mut startup = Vec::new();
    let http = loop {
        let line: serde_json::Value = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a listening log line");
        if line["message"] == "listening" && line["listener"] == "http" {
            break line["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("socket address");
        }
        startup.push(line);
    };
    Binary {
        child,
        http,
        lines,
        startup,
    }
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

async fn world() -> (tempfile::TempDir, SocketAddr) {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "web", &["allUsers"]),
    );
    (dir, backend)
}

#[tokio::test]
async fn a_1_gib_upload_streams_through_the_binary_without_growing_its_memory() {
    let (dir, _backend) = world().await;
    let binary = start(dir.path());
    // Warm up the connection pools so the measurement sees only the upload.
    assert_eq!(get(binary.http, "app.test", "/", &[]).await.status, 200);
    let before = peak_rss_mib(binary.child.id());

    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let body =
        http_body_util::StreamBody::new(futures_util::stream::iter((0..CHUNKS).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        })));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let request = http::Request::post(format!("http://{}/count", binary.http))
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = client.request(request).await.expect("upload");
    assert_eq!(response.status(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        echo["bodyBytes"],
        (CHUNK * CHUNKS) as u64,
        "every byte arrived"
    );

    let after = peak_rss_mib(binary.child.id());
    assert!(
        after - before < 32,
        "peak memory grew from {before} MiB to {after} MiB while 1 GiB streamed through"
    );
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_without_query_or_cookies() {
    let (dir, _backend) = world().await;
    let binary = start(dir.path());
    let reply = get(
        binary.http,
        "app.test",
        "/some/../page?token=SECRET",
        &[("cookie", "KUBE_IAP_AUTH=SECRET")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let access = loop {
        let line = binary
            .lines
            .recv_timeout(Duration::from_secs(5))
            .expect("an access log line");
        if line["target"] == "kube_iap::access" {
            break line;
        }
    };
    assert_eq!(access["host"], "app.test");
    assert_eq!(access["path"], "/page");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "default/app");
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 20)
    );
    assert!(access["latency_ms"].is_number());
    assert!(
        !access.to_string().contains("SECRET"),
        "no query or cookie value in the log: {access}"
    );
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn version_help_and_completions_answer_for_every_subcommand() {
    let version = run(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kube-iap {}", env!("CARGO_PKG_VERSION"))
    );
    let subcommands = [
        "serve",
        "crds",
        "explain",
        "tunnel",
        "login",
        "token",
        "verify-assertion",
        "codes",
        "completions",
    ];
    for subcommand in subcommands {
        let help = run(&[subcommand, "--help"]);
        assert!(help.status.success(), "{subcommand} --help");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage: kube-iap"),
            "{subcommand}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&script.stdout);
        assert!(
            text.contains("tunnel") && text.contains("explain"),
            "{shell}: {text}"
        );
    }
    // A usage error is exit status 2 with a message, not a panic.
    let wrong = run(&["tunnel", "--port", "not-a-number"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("error:"));
}

#[tokio::test]
async fn missing_key_secrets_are_warned_about_at_start_and_present_ones_are_not() {
    let warnings = |binary: &Binary| -> Vec<String> {
        binary
            .startup
            .iter()
            .filter(|line| line["level"] == "WARN")
            .map(|line| line["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (dir, _backend) = world().await;
    let without = warnings(&start(dir.path()));
    for missing in ["no session keys Secret", "no assertion signing keys Secret"] {
        assert!(
            without.iter().any(|w| w.starts_with(missing)),
            "no warning {missing:?} in {without:?}"
        );
    }

    write(
        dir.path(),
        "session-keys.yaml",
        &manifests::session_keys(&[("k1", [9; 32])]),
    );
    let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let indented: String = signing_key.lines().map(|l| format!("    {l}\n")).collect();
    write(
        dir.path(),
        "signing-keys.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: kube-iap-signing-keys, namespace: default}}\nstringData:\n  k1: |\n{indented}"
        ),
    );
    let with = warnings(&start(dir.path()));
    assert!(
        with.iter().all(|w| !w.contains("Secret")),
        "warned although both Secrets exist: {with:?}"
    );
}
