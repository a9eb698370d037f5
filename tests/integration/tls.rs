//! HTTPS: the certificate is chosen by SNI from the policies' TLS Secrets, and HTTP/2 is offered
//! by ALPN.

use crate::support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use support::certificates::{TestCert, certificate};
use support::manifests::{self, write};
use support::{backends, start_server};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn tls_policy(name: &str, host: &str, secret: &str) -> String {
    format!(
        "{}  tls: {{secretName: {secret}}}\n",
        manifests::policy(name, host, "web", &["allUsers"])
    )
}

async fn json(response: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
        .expect("JSON body")
}

/// A TLS handshake to `addr` as `server_name`, trusting only `roots`.
async fn handshake(
    addr: std::net::SocketAddr,
    roots: &[&TestCert],
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.der.clone()).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

async fn connect(
    addr: std::net::SocketAddr,
    roots: &[&TestCert],
    server_name: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    handshake(addr, roots, server_name, alpn)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn sni_chooses_between_two_certificates_and_both_http_versions_work() {
    let backend = backends::echo("web").await;
    let (alpha, beta) = (
        certificate("alpha.test", "alpha-tls"),
        certificate("beta.test", "beta-tls"),
    );
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "alpha.yaml",
        &format!(
            "{}---\n{}",
            alpha.secret_yaml,
            tls_policy("alpha", "alpha.test", "alpha-tls")
        ),
    );
    write(
        dir.path(),
        "beta.yaml",
        &format!(
            "{}---\n{}",
            beta.secret_yaml,
            tls_policy("beta", "beta.test", "beta-tls")
        ),
    );
    let server = start_server(dir.path()).await;
    let https = server.https_addr.expect("https listener");

    // HTTP/1.1 to alpha.test: alpha's certificate, forwarded with x-forwarded-proto https.
    let stream = connect(https, &[&alpha, &beta], "alpha.test", &[b"http/1.1"]).await;
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        alpha.der
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/hello")
        .header("host", "alpha.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["path"], "/hello");

    // HTTP/2 to beta.test: beta's certificate, h2 by ALPN, the Host reaches the backend.
    let stream = connect(https, &[&alpha, &beta], "beta.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], beta.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://beta.test/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(echo["headers"]["host"], "beta.test");

    // A name with no certificate gets no handshake, rather than someone else's certificate.
    let refused = handshake(https, &[&alpha, &beta], "gamma.test", &[]).await;
    assert!(refused.is_err());
    server.shutdown().await;
}

/// `GatewayInvalidTLSConfiguration`'s healthy counterpart: an HTTPS listener of a Gateway serves
/// its routes with the certificate its `certificateRefs` name (a wildcard, chosen by SNI), and
/// only over TLS.
#[tokio::test]
async fn a_gateway_https_listener_serves_its_routes_over_tls_only() {
    let backend = backends::echo("web").await;
    let wildcard = certificate("*.secure.test", "wildcard-tls");
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "gateway.yaml",
        &format!(
            r#"{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kube-iap}}
spec: {{controllerName: kube-iap.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: default}}
spec:
  gatewayClassName: kube-iap
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.secure.test"
    tls: {{certificateRefs: [{{name: wildcard-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: web}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: open, namespace: default}}
spec:
  oauthClientRef: {{name: idp}}
  access: [{{members: [allUsers]}}]
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]
"#,
            wildcard.secret_yaml
        ),
    );
    let server = start_server(dir.path()).await;
    let https = server.https_addr.expect("https listener");
    let stream = connect(https, &[&wildcard], "app.secure.test", &[b"http/1.1"]).await;
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        wildcard.der
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/hello")
        .header("host", "app.secure.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["backend"], "web");

    let plain = support::get(server.http_addr.unwrap(), "app.secure.test", "/hello", &[]).await;
    assert_eq!(
        plain.status, 404,
        "an HTTPS listener's routes are not served in the clear"
    );
    server.shutdown().await;
}
