//! TCP forwarding end to end: the `kube-iap tunnel` binary on stdin/stdout through the proxy to a
//! real TCP echo server, and each close code seen by a WebSocket client.

use crate::support;

use std::process::Stdio;

use futures_util::StreamExt;
use support::forging_idp::{self, Signing};
use support::manifests::{self, write};
use support::{idp, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP server that answers every connection by echoing its bytes upper-cased.
async fn tcp_echo() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    let upper = buffer[..read].to_ascii_uppercase();
                    if stream.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn policy(name: &str, host: &str, service: &str) -> String {
    format!(
        "{}  tcpForwarding: {{members: [\"user:carol@example.com\"], ports: [80]}}\n",
        manifests::policy(name, host, service, &["allAuthenticatedUsers"])
    )
}

#[tokio::test]
async fn a_tunnel_carries_bytes_and_refusals_carry_their_close_codes() {
    let forger = forging_idp::start().await;
    let echo = tcp_echo().await;
    let closed = support::backends::closed_port().await;
    let dir = manifests::folder(&[("db", echo.port()), ("down", closed)]);
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&forger.issuer, "secret", &["openid"]),
    );
    write(dir.path(), "db.yaml", &policy("db", "localhost", "db"));
    write(
        dir.path(),
        "down.yaml",
        &policy("down", "down.test", "down"),
    );
    write(
        dir.path(),
        "gone.yaml",
        &policy("gone", "gone.test", "missing"),
    );
    let server = start_server(dir.path()).await;
    let port = server.http_addr.unwrap().port();
    let carol = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let dave = forger.mint(&forger.claims(idp::CLIENT_ID, "dave"), Signing::Published);

    // The client as ssh would run it: bytes in on stdin, the backend's answer out on stdout.
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "tunnel",
            "--url",
            &format!("http://localhost:{port}"),
            "--port",
            "80",
            "--stdio",
        ])
        .env("KUBE_IAP_TOKEN", &carol)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"hello through the tunnel").await.unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut answer = vec![0u8; 24];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stdout.read_exact(&mut answer),
    )
    .await
    .expect("the echo comes back")
    .unwrap();
    assert_eq!(answer, b"HELLO THROUGH THE TUNNEL");
    drop(stdin); // half-close: the tunnel ends once the backend has nothing more to say
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), client.wait())
        .await
        .expect("the client exits after stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");

    // Each refusal, seen by a WebSocket client: the close code and the reason.
    let close_code = |host: &'static str, token: Option<String>, query: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let auth: Vec<(&str, String)> = token
            .map(|token| ("authorization", format!("Bearer {token}")))
            .into_iter()
            .collect();
        let request =
            support::websocket_request(&format!("ws://{host}/_iap/tunnel{query}"), host, &auth);
        match tokio_tungstenite::client_async(request, stream).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("{error}"),
            Ok((mut socket, _)) => loop {
                match socket.next().await {
                    Some(Ok(message)) if message.is_close() => {
                        let tokio_tungstenite::tungstenite::Message::Close(Some(frame)) = message
                        else {
                            panic!("a close without a code");
                        };
                        break Ok(u16::from(frame.code));
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            },
        }
    };
    assert_eq!(
        close_code("localhost", None, "?port=80").await,
        Err(401),
        "no token, no upgrade"
    );
    assert_eq!(
        close_code("localhost", Some("junk".into()), "?port=80").await,
        Err(401)
    );
    assert_eq!(
        close_code("localhost", Some(dave.clone()), "?port=80").await,
        Ok(4033),
        "not a tunnel member"
    );
    assert_eq!(
        close_code("localhost", Some(carol.clone()), "?port=22").await,
        Ok(4033),
        "port not granted"
    );
    assert_eq!(
        close_code("gone.test", Some(carol.clone()), "?port=80").await,
        Ok(4047),
        "no such Service"
    );
    assert_eq!(
        close_code("down.test", Some(carol.clone()), "?port=80").await,
        Ok(4003),
        "nothing listens"
    );

    // The client explains a refusal with the error-code table and exits non-zero.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "tunnel",
            "--url",
            &format!("http://localhost:{port}"),
            "--port",
            "80",
            "--stdio",
        ])
        .env("KUBE_IAP_TOKEN", &dave)
        .stdin(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("4033") && message.contains("tcpForwarding.members"),
        "{message}"
    );

    // An open tunnel closes with 4004 when its token expires, and with 4033 when revoked.
    let open = |token: String| async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = support::websocket_request(
            "ws://localhost/_iap/tunnel?port=80",
            "localhost",
            &[("authorization", format!("Bearer {token}"))],
        );
        tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap()
            .0
    };
    let closes_with = |mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| async move {
        tokio::time::timeout(std::time::Duration::from_secs(6), async move {
            loop {
                match socket.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                        return u16::from(frame.code);
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("the tunnel closes within the time allowed")
    };
    let mut short = forger.claims(idp::CLIENT_ID, "carol");
    short["exp"] = (forging_idp::now() + 2).into();
    let expiring = open(forger.mint(&short, Signing::Published)).await;
    assert_eq!(closes_with(expiring).await, 4004);
    let revoked = open(carol.clone()).await;
    write(
        dir.path(),
        "db.yaml",
        &policy("db", "localhost", "db").replace("user:carol@example.com", "user:erin@example.com"),
    );
    assert_eq!(closes_with(revoked).await, 4033);
    server.shutdown().await;
}

/// A TCP server that reads until the client half-closes, then answers the SHA-256 (hex) of
/// everything it read.
async fn tcp_hasher() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut context = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => context.update(&buffer[..read]),
                    }
                }
                let hex: String = context
                    .finish()
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let _ = stream.write_all(hex.as_bytes()).await;
            });
        }
    });
    addr
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `data` through the tunnel listening at `local`, half-closes, and returns the answer.
async fn through(local: std::net::SocketAddr, data: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(local).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(data).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut answer = String::new();
    let receive = reader.read_to_string(&mut answer);
    let (_, received) = tokio::join!(send, receive);
    received.unwrap();
    answer
}

#[tokio::test]
async fn a_hundred_megabytes_and_twenty_parallel_connections_arrive_intact() {
    let forger = forging_idp::start().await;
    let hasher = tcp_hasher().await;
    let dir = manifests::folder(&[("hash", hasher.port())]);
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&forger.issuer, "secret", &["openid"]),
    );
    write(
        dir.path(),
        "hash.yaml",
        &policy("hash", "localhost", "hash"),
    );
    let server = start_server(dir.path()).await;
    let carol = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "tunnel",
            "--url",
            &format!("http://localhost:{}", server.http_addr.unwrap().port()),
            "--port",
            "80",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBE_IAP_TOKEN", &carol)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap());
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut first)
        .await
        .unwrap();
    let local: std::net::SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .expect("the client says where it listens")
        .parse()
        .unwrap();

    // 100 MB of varied bytes, hashed on both ends.
    let big: Vec<u8> = (0..100 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert_eq!(through(local, &big).await, sha256_hex(&big));

    let parallel = (0..20u8).map(|n| {
        let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i as u8) ^ n).collect();
        async move { (through(local, &data).await, sha256_hex(&data)) }
    });
    for (got, want) in futures_util::future::join_all(parallel).await {
        assert_eq!(got, want);
    }
    let metrics = support::get(server.admin_addr, "admin", "/metrics", &[])
        .await
        .text();
    let to_backend: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("kube_iap_tunnel_bytes_total{direction=\"to_backend\"} ")
        })
        .expect("a tunnel byte counter")
        .parse()
        .unwrap();
    assert!(
        to_backend >= 100 * 1024 * 1024 + 20 * 256 * 1024,
        "{to_backend}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kube_iap_login_caches_a_real_token_privately_and_the_tunnel_uses_it() {
    let provider = idp::start(&[]).await;
    let echo = tcp_echo().await;
    let dir = manifests::folder(&[("db", echo.port())]);
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&provider.issuer, idp::CLIENT_SECRET, &["openid", "email"]),
    );
    write(dir.path(), "db.yaml", &policy("db", "localhost", "db"));
    let server = start_server(dir.path()).await;
    let cache = dir.path().join("cli").join("token.json");
    // A fixed loopback port, as providers that match redirect URIs port and all need.
    let callback_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };

    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "login",
            "--issuer",
            &provider.issuer,
            "--client-id",
            idp::CLIENT_ID,
        ])
        .args([
            "--client-secret",
            idp::CLIENT_SECRET,
            "--no-browser",
            "--scopes",
            "openid,email",
            "--port",
            &callback_port.to_string(),
        ])
        .arg("--cache")
        .arg(&cache)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(login.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        let read = tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
            .await
            .unwrap();
        assert!(read > 0, "login printed no sign-in URL");
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    // The person signs in at the provider; it sends the browser to the CLI's loopback listener.
    let mut browser = support::browser::Browser::new();
    let callback = browser.sign_in_at_provider(&url, "carol@example.com").await;
    assert!(
        callback.starts_with(&format!("http://127.0.0.1:{callback_port}/_iap/callback")),
        "{callback}"
    );
    let landed = browser.get(&callback).await;
    assert_eq!(landed.status, 200, "{}", landed.text());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), login.wait())
        .await
        .expect("login exits once signed in")
        .unwrap();
    assert!(status.success());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the token cache is the user's alone");

    // No token flag or variable: the tunnel uses the cached sign-in.
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "tunnel",
            "--url",
            &format!("http://localhost:{}", server.http_addr.unwrap().port()),
        ])
        .args(["--port", "80", "--stdio", "--token-cache"])
        .arg(&cache)
        .env_remove("KUBE_IAP_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"signed in at the terminal").await.unwrap();
    let mut answer = vec![0u8; 25];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.stdout.take().unwrap().read_exact(&mut answer),
    )
    .await
    .expect("the echo comes back")
    .unwrap();
    assert_eq!(answer, b"SIGNED IN AT THE TERMINAL");
    drop(stdin);

    // Once the cached ID token has expired, the refresh token renews it without a sign-in.
    let mut cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert!(cached["refresh_token"].is_string(), "{cached}");
    let old_token = cached["id_token"].clone();
    cached["expires_at"] = 1.into();
    std::fs::write(&cache, cached.to_string()).unwrap();
    let renewed = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "tunnel",
            "--url",
            &format!("http://localhost:{}", server.http_addr.unwrap().port()),
        ])
        .args(["--port", "80", "--stdio", "--token-cache"])
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_ne!(cached["id_token"], old_token, "a new ID token was cached");
    assert!(cached["expires_at"].as_u64().unwrap() > forging_idp::now());

    // Scripts get the current token from `kube-iap token`, renewed the same way.
    let token = |cache: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
            .args(["token", "--cache"])
            .arg(cache)
            .output()
            .unwrap()
    };
    let printed = token(&cache);
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        cached["id_token"].as_str().unwrap()
    );
    let mut expired = cached.clone();
    expired["expires_at"] = 1.into();
    std::fs::write(&cache, expired.to_string()).unwrap();
    let renewed = token(&cache);
    assert!(renewed.status.success(), "{renewed:?}");
    let renewed = String::from_utf8_lossy(&renewed.stdout).trim().to_string();
    assert_ne!(
        renewed,
        cached["id_token"].as_str().unwrap(),
        "renewed, not the expired one"
    );
    let missing = token(&dir.path().join("nobody.json"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("run `kube-iap login`"),
        "{missing:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ssh_runs_a_command_through_the_tunnel_as_its_proxy_command() {
    let sshd = std::path::Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "/usr/sbin/sshd is missing: install Debian's openssh-server (as .ci/run does)"
    );
    let keys = tempfile::tempdir().unwrap();
    let path = |name: &str| keys.path().join(name);
    for (file, comment) in [("host_key", "host"), ("user_key", "user")] {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path(file))
            .status()
            .unwrap();
        assert!(made.success());
    }
    std::fs::copy(path("user_key.pub"), path("authorized_keys")).unwrap();
    let ssh_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    std::fs::write(
        path("sshd_config"),
        format!(
            "Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPidFile {}\n",
            path("host_key").display(),
            path("authorized_keys").display(),
            path("sshd.pid").display()
        ),
    )
    .unwrap();
    // sshd insists on its privilege-separation directory when it runs as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let _daemon = tokio::process::Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(path("sshd_config"))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", ssh_port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let forger = forging_idp::start().await;
    let dir = manifests::folder(&[("ssh", ssh_port)]);
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&forger.issuer, "secret", &["openid"]),
    );
    write(dir.path(), "ssh.yaml", &policy("ssh", "localhost", "ssh"));
    let server = start_server(dir.path()).await;
    let carol = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let proxy_command = format!(
        "{} tunnel --url http://localhost:{} --port 80 --stdio",
        env!("CARGO_BIN_EXE_kube-iap"),
        server.http_addr.unwrap().port()
    );
    let ssh = tokio::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("ProxyCommand={proxy_command}"))
        .arg("-i")
        .arg(path("user_key"))
        .arg(format!("{}@db.example.com", user.trim()))
        .arg("echo tunnel-ok")
        .env("KUBE_IAP_TOKEN", &carol)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), ssh)
        .await
        .expect("ssh finishes")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "tunnel-ok\n",
        "ssh failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    server.shutdown().await;
}
