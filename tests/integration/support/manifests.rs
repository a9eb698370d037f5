//! YAML manifests for tests, written the way a user writes them.

use std::path::Path;

/// A GatewayClass `kube-iap` of kube-iap's controller, and a Gateway `default/web` of it with
/// one HTTP listener for every hostname.
pub const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kube-iap}
spec: {controllerName: kube-iap.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: kube-iap
  listeners:
  - {name: http, protocol: HTTP, port: 80}
"#;

/// An OAuthClient `idp` with its Secret: a healthy client.
pub fn oauth_client() -> String {
    r#"apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp, namespace: default}
spec:
  issuer: http://127.0.0.1:1
  clientId: test-client
  clientSecretRef: {name: idp-secret, key: client-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: idp-secret, namespace: default}
stringData: {client-secret: do-not-leak-this}
"#
    .to_string()
}

/// A Service `name` on port 80 whose EndpointSlice points at 127.0.0.1:`port`.
pub fn service(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
"#
    )
}

/// An IapPolicy `name` serving `host` from Service `service` port 80 to `members`.
pub fn policy(name: &str, host: &str, service: &str, members: &[&str]) -> String {
    let members = members
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  oauthClientRef: {{name: idp}}
  hosts: ["{host}"]
  backend: {{service: {service}, port: 80}}
  access:
    - members: [{members}]
"#
    )
}

pub fn write(dir: &Path, file: &str, text: &str) {
    // Write then rename, as editors and ConfigMap mounts do, so a reload never sees half a file.
    let temporary = dir.join(format!(".{file}.tmp"));
    std::fs::write(&temporary, text).expect("write manifest");
    std::fs::rename(&temporary, dir.join(file)).expect("rename manifest");
}

/// A manifests folder holding the healthy OAuth client and, for each `(name, port)`, a Service
/// `name` whose endpoint is 127.0.0.1:`port`, in `NAME-service.yaml`.
pub fn folder(services: &[(&str, u16)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "client.yaml", &oauth_client());
    for (name, port) in services {
        write(
            dir.path(),
            &format!("{name}-service.yaml"),
            &service(name, *port),
        );
    }
    dir
}

/// The session-keys Secret kube-iap reads by default, with `(entry name, key)` pairs.
pub fn session_keys(entries: &[(&str, [u8; 32])]) -> String {
    use base64::Engine;
    let data: String = entries
        .iter()
        .map(|(name, key)| {
            format!(
                "  {name}: {}\n",
                base64::engine::general_purpose::STANDARD.encode(key)
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: kube-iap-session-keys, namespace: default}}\nstringData:\n{data}"
    )
}
