//! The install manifests: the Helm chart `charts/kube-iap` lints clean, renders manifests the
//! Kubernetes schemas accept, refuses bad values, grants what `deploy/` grants, runs flags the
//! binary knows, and creates key Secrets the proxy loads; `deploy/` kustomizes into valid
//! manifests. helm, kubectl and kubernetes-validate come from `scripts/install-tools.sh` (run by
//! `scripts/test.sh`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kube-iap");

/// Every optional part of the chart switched on, so all of it is rendered and validated.
const EVERYTHING_ON: &[&str] = &[
    "metrics.serviceMonitor.enabled=true",
    "autoscaling.enabled=true",
    "googleCompatibleHeaders=true",
    "trustedProxyCidrs={10.0.0.0/8,192.168.0.0/16}",
    "ingressAddresses={203.0.113.10}",
    "watchNamespace=apps",
    "ingressClass.default=true",
    "imagePullSecrets={registry}",
    "logFormat=text",
];

pub(crate) use crate::support::testbed::tool;

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{} runs: {error}", program.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `helm template` as the release `kube-iap` in namespace `kube-iap`, as `deploy/` installs.
fn template(sets: &[&str]) -> Output {
    let mut args = vec!["template", "kube-iap", CHART, "--namespace", "kube-iap"];
    for set in sets {
        args.extend(["--set", set]);
    }
    run(&tool("helm"), &args)
}

fn render(sets: &[&str]) -> (String, Vec<Value>) {
    let output = template(sets);
    assert!(output.status.success(), "helm template: {}", text(&output));
    let yaml = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    (yaml.clone(), documents(&yaml))
}

/// The documents of a multi-document YAML stream, empty ones left out.
pub(crate) fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("the YAML parses"))
        .filter(|document| !document.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn deploy(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    documents(&std::fs::read_to_string(&path).expect("deploy/ file exists"))
}

#[test]
fn the_chart_lints_clean_and_renders_what_kubernetes_accepts() {
    let lint = run(&tool("helm"), &["lint", "--strict", CHART]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));

    for (name, sets) in [("defaults", &[][..]), ("everything-on", EVERYTHING_ON)] {
        let (yaml, _) = render(sets);
        assert_kubernetes_accepts(name, &yaml);
    }
}

#[test]
fn deploy_kustomizes_into_manifests_kubernetes_accepts() {
    let deploy_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let built = run(&tool("kubectl"), &["kustomize", deploy_dir]);
    assert!(
        built.status.success(),
        "kubectl kustomize: {}",
        text(&built)
    );
    let yaml = String::from_utf8(built.stdout).unwrap();
    const CLUSTER_SCOPED: [&str; 5] = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
    ];
    for object in documents(&yaml) {
        if !CLUSTER_SCOPED.contains(&object["kind"].as_str().unwrap()) {
            assert_eq!(object["metadata"]["namespace"], "kube-iap", "{object}");
        }
    }
    assert_kubernetes_accepts("deploy", &yaml);
}

/// `kubernetes-validate --strict`: every object of a built-in kind checked field by field
/// against the Kubernetes schemas (unknown fields are errors).
pub(crate) fn assert_kubernetes_accepts(name: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let validate = run(
        &tool("kubernetes-validate"),
        &["--strict", file.to_str().unwrap()],
    );
    let report = text(&validate);
    assert!(validate.status.success(), "{name}: {report}");
    // ServiceMonitor is the Prometheus Operator's, with no schema here; everything else must
    // have been checked, not skipped.
    let built_in = documents(yaml)
        .iter()
        .filter(|o| o["kind"] != "ServiceMonitor")
        .count();
    assert_eq!(
        report.matches(" passed for resource ").count(),
        built_in,
        "{name}: every built-in object is validated: {report}"
    );
}

#[test]
fn bad_values_are_refused_by_the_schema_naming_the_value() {
    let cases = [
        ("replicaCount=0", "/replicaCount"),
        ("ports.http=70000", "/ports/http"),
        ("logFormat=xml", "/logFormat"),
        ("replicas=3", "replicas"),
        ("service.type=External", "/service/type"),
        ("trustedProxyCidrs={10.0.0.0}", "/trustedProxyCidrs/0"),
        ("keys.create=maybe", "/keys/create"),
        ("resources.limits.memory=lots", "/resources/limits/memory"),
    ];
    for (set, path) in cases {
        let output = template(&[set]);
        let said = text(&output);
        assert!(!output.status.success(), "{set} was accepted");
        assert!(said.contains(path), "{set}: the error names {path}: {said}");
    }
}

#[test]
fn the_chart_installs_the_generated_crds() {
    let generated =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kube-iap.yaml"))
            .unwrap();
    let in_chart = std::fs::read_to_string(format!("{CHART}/crds/kube-iap.yaml"))
        .expect("charts/kube-iap/crds/kube-iap.yaml exists");
    assert!(
        in_chart == generated,
        "charts/kube-iap/crds/ is out of date: cp crds/kube-iap.yaml charts/kube-iap/crds/"
    );
}

#[test]
fn the_chart_grants_exactly_the_rbac_of_deploy() {
    let (_, chart) = render(&[]);
    let base = deploy("rbac.yaml");
    for (kind, name) in [
        ("ClusterRole", "kube-iap"),
        ("Role", "kube-iap-leader-election"),
    ] {
        assert_eq!(
            find(&chart, kind, name)["rules"],
            find(&base, kind, name)["rules"],
            "{kind} {name}"
        );
    }
    for (kind, name) in [
        ("ClusterRoleBinding", "kube-iap"),
        ("RoleBinding", "kube-iap-leader-election"),
    ] {
        let (ours, theirs) = (find(&chart, kind, name), find(&base, kind, name));
        assert_eq!(ours["roleRef"], theirs["roleRef"], "{kind} {name}");
        assert_eq!(ours["subjects"], theirs["subjects"], "{kind} {name}");
    }
    let ingress_class = find(&chart, "IngressClass", "kube-iap");
    assert_eq!(
        ingress_class["spec"],
        find(&deploy("ingressclass.yaml"), "IngressClass", "kube-iap")["spec"]
    );
}

#[test]
fn the_chart_runs_the_deployment_of_deploy_with_flags_the_binary_knows() {
    let (_, chart) = render(EVERYTHING_ON);
    let base_file = deploy("deployment.yaml");
    let ours = &find(&chart, "Deployment", "kube-iap")["spec"]["template"]["spec"];
    let base = &find(&base_file, "Deployment", "kube-iap")["spec"]["template"]["spec"];
    assert_eq!(ours["securityContext"], base["securityContext"]);
    let (container, base_container) = (&ours["containers"][0], &base["containers"][0]);
    for field in [
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "ports",
    ] {
        assert_eq!(container[field], base_container[field], "{field}");
    }

    // Every flag parses (clap stops at the first unknown one, before --help), and every
    // environment variable set is one the binary reads.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "controller");
    let mut with_help = args.clone();
    with_help.push("--help");
    let help = Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args(&with_help)
        .output()
        .unwrap();
    let help_text = text(&help);
    assert!(help.status.success(), "{args:?}: {help_text}");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.len() >= 8, "{env:?}");
    for name in env {
        assert!(
            help_text.contains(&format!("[env: {name}")),
            "kube-iap controller does not read {name}"
        );
    }
}

#[tokio::test]
async fn the_key_secrets_are_fresh_kept_on_uninstall_and_load_into_the_proxy() {
    let (_, first) = render(&[]);
    let (_, second) = render(&[]);
    for name in ["kube-iap-session-keys", "kube-iap-signing-keys"] {
        let secret = find(&first, "Secret", name);
        assert_eq!(
            secret["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_ne!(
            secret["data"],
            find(&second, "Secret", name)["data"],
            "{name}: every install draws its own keys"
        );
    }
    let (_, none) = render(&["keys.create=false"]);
    assert!(none.iter().all(|o| o["kind"] != "Secret"));

    // Local mode reads the same Secrets from `default`: both key rings must load from them.
    let backend = support::backends::echo("web").await;
    let dir = support::manifests::folder(&[("web", backend.port())]);
    for name in ["kube-iap-session-keys", "kube-iap-signing-keys"] {
        let mut secret = find(&first, "Secret", name).clone();
        secret["metadata"]["namespace"] = "default".into();
        support::manifests::write(
            dir.path(),
            &format!("{name}.yaml"),
            &serde_yaml::to_string(&secret).unwrap(),
        );
    }
    let server = support::start_server(dir.path()).await;
    let table = server.published.table.clone();
    support::eventually("the chart's keys load", || {
        let table = table.clone();
        async move {
            let table = table.load();
            table.session_keys.is_some() && table.signing_keys.is_some()
        }
    })
    .await;
    server.shutdown().await;
}

/// The objects the README says an install creates, on `testbed`, in namespace `kube-iap`.
async fn assert_installed(testbed: &support::testbed::Testbed) {
    let namespace = "kube-iap";
    for (api_version, kind, namespace, name) in [
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "iappolicies.kube-iap.io",
        ),
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "oauthclients.kube-iap.io",
        ),
        ("v1", "ServiceAccount", namespace, "kube-iap"),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "",
            "kube-iap",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "kube-iap",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "Role",
            namespace,
            "kube-iap-leader-election",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            namespace,
            "kube-iap-leader-election",
        ),
        ("networking.k8s.io/v1", "IngressClass", "", "kube-iap"),
        ("apps/v1", "Deployment", namespace, "kube-iap"),
        ("policy/v1", "PodDisruptionBudget", namespace, "kube-iap"),
        ("v1", "Service", namespace, "kube-iap"),
        ("v1", "Service", namespace, "kube-iap-metrics"),
    ] {
        assert!(
            testbed
                .get(namespace, api_version, kind, name)
                .await
                .is_some(),
            "{kind} {name} was not created"
        );
    }
}

/// What a user runs, on a real API server of its own (the install is cluster-wide): `helm
/// install`, `helm upgrade` (the key Secrets keep their keys), `helm uninstall` (the key Secrets
/// stay, as documented). Every step succeeds without a warning.
#[tokio::test]
async fn helm_install_upgrade_and_uninstall_work_on_a_real_api_server() {
    let testbed = support::testbed::Testbed::start();
    let helm = |args: &[&str]| {
        let output = Command::new(tool("helm"))
            .args(args)
            .env("KUBECONFIG", &testbed.kubeconfig)
            .output()
            .expect("helm runs");
        let printed = text(&output);
        assert!(
            output.status.success(),
            "helm {}: {printed}",
            args.join(" ")
        );
        assert!(
            !printed.to_lowercase().contains("warning"),
            "helm {}: {printed}",
            args.join(" ")
        );
    };
    let keys = || async {
        let mut data = Vec::new();
        for name in ["kube-iap-session-keys", "kube-iap-signing-keys"] {
            let secret = testbed.get("kube-iap", "v1", "Secret", name).await;
            data.push(secret.map(|secret| secret["data"].clone()));
        }
        data
    };

    helm(&[
        "install",
        "kube-iap",
        CHART,
        "--namespace",
        "kube-iap",
        "--create-namespace",
    ]);
    assert_installed(&testbed).await;
    let first = keys().await;
    assert!(
        first.iter().all(Option::is_some),
        "the key Secrets are created"
    );
    helm(&[
        "upgrade",
        "kube-iap",
        CHART,
        "--namespace",
        "kube-iap",
        "--set",
        "replicaCount=3",
    ]);
    let deployment = testbed
        .get("kube-iap", "apps/v1", "Deployment", "kube-iap")
        .await
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(keys().await, first, "an upgrade keeps the keys");
    helm(&["uninstall", "kube-iap", "--namespace", "kube-iap"]);
    assert!(
        testbed
            .get(
                "",
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "kube-iap"
            )
            .await
            .is_none(),
        "uninstall removes the release"
    );
    assert_eq!(keys().await, first, "uninstall leaves the keys");
}

/// `kubectl apply -k deploy/` on a fresh real API server: everything is created, with no warning.
#[tokio::test]
async fn kubectl_apply_k_deploy_works_on_a_real_api_server() {
    let testbed = support::testbed::Testbed::start();
    let deploy_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let output = testbed.kubectl_output(&["apply", "-k", deploy_dir]);
    let printed = text(&output);
    assert!(
        output.status.success(),
        "kubectl apply -k deploy/: {printed}"
    );
    assert!(!printed.to_lowercase().contains("warning"), "{printed}");
    assert_installed(&testbed).await;
}
