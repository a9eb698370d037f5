//! A real Kubernetes API server (kube-apiserver and etcd, started by `scripts/testbed.sh`) for
//! everything Kubernetes-facing: the CRDs, the chart, RBAC and the controller. One server is
//! shared by the whole test binary, each test working in a namespace of its own; a test that
//! pauses, restarts or installs cluster-wide objects gets a server of its own.
//!
//! The script runs as a supervisor whose standard input this process holds: when the tests end,
//! however they end, the pipe closes and the servers stop with them.
//!
//! Self-contained, so that `benches/controller_scale.rs` includes the same file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiCapabilities;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Testbed {
    /// The folder holding the servers' data, certificates, ports, kubeconfig and logs.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    apiserver_pid: Mutex<u32>,
    /// What discovery said of each kind, so applying thousands of objects asks once per kind.
    kinds: Mutex<BTreeMap<String, (ApiResource, ApiCapabilities)>>,
    _scratch: tempfile::TempDir,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

/// The server every test may share. The kube-iap CRDs are installed on it (by `kubectl apply`,
/// as a user installs them; [`crd_install_output`] is what that printed), and the Gateway API's
/// as the chart installs them. (Servers of a test's own have only what the test installs: the
/// controller must work without the Gateway API too.)
pub fn shared() -> &'static Testbed {
    static SHARED: OnceLock<Testbed> = OnceLock::new();
    SHARED.get_or_init(|| {
        let testbed = Testbed::start();
        testbed.install_gateway_api();
        let _ = CRD_INSTALL.set(testbed.install_crds());
        testbed
    })
}

static CRD_INSTALL: OnceLock<String> = OnceLock::new();

/// What `kubectl apply -f crds/` printed on the shared server (warnings included).
pub fn crd_install_output() -> &'static str {
    shared();
    CRD_INSTALL
        .get()
        .expect("set when the shared server started")
}

/// A namespace name no other test of this run uses (namespaces never finish deleting on a bare
/// API server, so names are never reused).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Testbed {
    /// A server of the caller's own, stopped when it is dropped.
    pub fn start() -> Testbed {
        let scratch = tempfile::tempdir().expect("scratch folder");
        let dir = scratch.path().join("testbed");
        let mut child = Command::new(format!("{ROOT}/scripts/testbed.sh"))
            .arg("supervise")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("scripts/testbed.sh runs");
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let exports = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("export ") => break line,
                Some(Ok(_)) => continue,
                _ => panic!(
                    "no real API server: scripts/testbed.sh could not start one (its logs are \
                     in {}/logs); the Kubernetes tests need it",
                    dir.display()
                ),
            }
        };
        let vars: BTreeMap<&str, &str> = exports["export ".len()..]
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .collect();
        Testbed {
            kubeconfig: PathBuf::from(vars["KUBECONFIG"]),
            server: vars["TESTBED_APISERVER"].to_string(),
            apiserver_pid: Mutex::new(vars["TESTBED_APISERVER_PID"].parse().expect("a pid")),
            kinds: Mutex::default(),
            dir,
            _scratch: scratch,
            supervisor: Mutex::new(Some((child, stdin))),
        }
    }

    /// kube-iap's CRDs, by `kubectl apply` as a user installs them, and established; what
    /// kubectl printed (warnings included).
    pub fn install_crds(&self) -> String {
        let output = self.kubectl(&["apply", "-f", &format!("{ROOT}/crds/")]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/iappolicies.kube-iap.io",
            "crd/oauthclients.kube-iap.io",
        ]);
        output
    }

    /// The Gateway API CRDs from the chart (`gatewayAPI.installCRDs=true`), applied
    /// server-side (the HTTPRoute CRD is too big for kubectl's client-side last-applied
    /// annotation), and established.
    pub fn install_gateway_api(&self) {
        let rendered = Command::new(tool("helm"))
            .args(["template", "kube-iap", &format!("{ROOT}/charts/kube-iap")])
            .args(["--set", "gatewayAPI.installCRDs=true"])
            .args(["--show-only", "templates/gateway-api.yaml"])
            .output()
            .expect("helm runs");
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let file = self.dir.join("gateway-api.yaml");
        std::fs::write(&file, &rendered.stdout).expect("written");
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            file.to_str().expect("utf-8"),
        ]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/grpcroutes.gateway.networking.k8s.io",
            "crd/referencegrants.gateway.networking.k8s.io",
        ]);
    }

    /// A client as the admin (`system:masters`). Made per call, not kept: a kube client's
    /// connection task lives on the runtime that made it, and each test has its own runtime.
    pub async fn client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig).await
    }

    pub async fn client_from(&self, kubeconfig: &Path) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig is usable");
        kube::Client::try_from(config).expect("client")
    }

    /// A kubeconfig for the same server that authenticates with `token` and talks to `server`
    /// (the API server itself, or a relay in front of it).
    pub fn write_kubeconfig(&self, path: &Path, server: &str, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
             clusters: [{{name: t, cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: t, user: {{token: \"{token}\"}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: t}}}}]\n",
            self.dir.join("pki/ca.crt").display()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// The admin's token, for a kubeconfig of the caller's.
    pub fn admin_token(&self) -> String {
        let tokens = std::fs::read_to_string(self.dir.join("pki/tokens.csv")).expect("tokens");
        tokens.split(',').next().expect("a token").to_string()
    }

    /// Runs kubectl (from `scripts/install-tools.sh`) against this server; panics on failure and
    /// returns what it printed on both streams.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs")
    }

    /// Creates a namespace named after `prefix` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.apply(
            "",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
        )
        .await;
        name
    }

    /// Server-side applies every document of `yaml` (field manager `tests`), namespaced ones into
    /// `namespace` whatever their manifest says.
    pub async fn apply(&self, namespace: &str, yaml: &str) {
        for result in self.try_apply(namespace, yaml).await {
            result.unwrap_or_else(|error| panic!("the API server refused a test object: {error}"));
        }
    }

    /// As [`apply`](Self::apply), returning the API server's answer to each document.
    pub async fn try_apply(&self, namespace: &str, yaml: &str) -> Vec<Result<Value, String>> {
        let client = self.client().await;
        let mut results = Vec::new();
        for mut document in yaml_documents(yaml) {
            let (api, name) = self.api_for(&client, namespace, &mut document).await;
            let result = api
                .patch(
                    &name,
                    &PatchParams::apply("tests").force(),
                    &Patch::Apply(&document),
                )
                .await
                .map(|object| serde_json::to_value(object).expect("JSON"))
                .map_err(|error| error.to_string());
            results.push(result);
        }
        results
    }

    async fn api_for(
        &self,
        client: &kube::Client,
        namespace: &str,
        document: &mut Value,
    ) -> (Api<DynamicObject>, String) {
        let api_version = document["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, document["kind"].as_str().expect("kind"));
        let known = self
            .kinds
            .lock()
            .unwrap()
            .get(&api_version_kind(document))
            .cloned();
        let (resource, capabilities) = match known {
            Some(found) => found,
            None => {
                // A CRD just installed takes a moment to appear in discovery.
                let mut attempts = 0;
                let found = loop {
                    match kube::discovery::pinned_kind(client, &gvk).await {
                        Ok(found) => break found,
                        Err(_) if attempts < 100 => attempts += 1,
                        Err(error) => panic!("{gvk:?} is not served: {error}"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                };
                self.kinds
                    .lock()
                    .unwrap()
                    .insert(api_version_kind(document), found.clone());
                found
            }
        };
        let name = document["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let api = if capabilities.scope == kube::discovery::Scope::Namespaced {
            document["metadata"]["namespace"] = json!(namespace);
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        (api, name)
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Option<Value> {
        let client = self.client().await;
        let mut document =
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        let (api, _) = self.api_for(&client, namespace, &mut document).await;
        api.get_opt(name)
            .await
            .expect("the API server answers")
            .map(|object| serde_json::to_value(object).expect("JSON"))
    }

    pub async fn delete(&self, namespace: &str, api_version: &str, kind: &str, name: &str) {
        let client = self.client().await;
        let mut document =
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        let (api, _) = self.api_for(&client, namespace, &mut document).await;
        api.delete(name, &Default::default())
            .await
            .expect("deleted");
    }

    /// The Events (`events.k8s.io/v1`) of a namespace.
    pub async fn events(&self, namespace: &str) -> Vec<Value> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client().await, namespace);
        api.list(&ListParams::default())
            .await
            .expect("events listed")
            .items
            .into_iter()
            .map(|event| serde_json::to_value(event).expect("JSON"))
            .collect()
    }

    /// A token of ServiceAccount `namespace/name`, issued by the API server itself: whatever it
    /// does is judged by the real RBAC authorizer.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("a token for the ServiceAccount");
        issued
            .status
            .and_then(|status| status.token)
            .expect("the API server issued a token")
    }

    /// Stops the API server process (SIGSTOP): it holds its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.apiserver_pid.lock().unwrap().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Compacts etcd's history up to now: watches resuming from before it get 410 Gone.
    pub fn compact(&self) {
        self.script(&["compact"]);
    }

    /// Restarts kube-apiserver on the same port and data; its watch cache starts anew, so only
    /// watches resuming from now on are served.
    pub fn restart(&self) {
        let exports = self.script(&["restart"]);
        let pid = exports
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix("TESTBED_APISERVER_PID="))
            .expect("the new pid");
        *self.apiserver_pid.lock().unwrap() = pid.parse().expect("a pid");
    }

    fn script(&self, args: &[&str]) -> String {
        let output = Command::new(format!("{ROOT}/scripts/testbed.sh"))
            .args(args)
            .arg(&self.dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/testbed.sh runs");
        assert!(
            output.status.success(),
            "scripts/testbed.sh {args:?} failed"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// "networking.k8s.io/v1/Ingress": a kind has no '/', so the text names one kind of one group.
fn api_version_kind(document: &Value) -> String {
    format!(
        "{}/{}",
        document["apiVersion"].as_str().unwrap_or_default(),
        document["kind"].as_str().unwrap_or_default()
    )
}

/// A tool `scripts/install-tools.sh` installed (helm, kubectl, kubernetes-validate).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("KUBE_IAP_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join(".tools/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools.sh",
        path.display()
    );
    path
}

/// The documents of a YAML stream, empty ones left out.
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Closing its standard input tells the supervisor to stop both servers; wait for it, so
        // the scratch folder is removed after them.
        if let Some((mut child, stdin)) = self.supervisor.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
