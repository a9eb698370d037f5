//! Local mode: every `*.yaml` / `*.yml` file of a folder, multi-document, read as the objects a
//! cluster would hold. A malformed document is reported and skipped; it never stops the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde::Serialize;

use crate::api::gateway::{GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::{IapPolicy, OAuthClient};
use crate::index::{Index, Kind, ObjectKey, Resource};
use crate::metrics::Metrics;
use crate::publish::Published;

/// A document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based position of the document in its file.
    pub document: usize,
    pub reason: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (document {}): {}",
            self.file.display(),
            self.document,
            self.reason
        )
    }
}

/// What one read of the folder found.
#[derive(Debug, Default)]
pub struct Manifests {
    pub resources: Vec<Resource>,
    pub errors: Vec<ManifestError>,
    /// `apiVersion/kind` of documents of kinds kube-iap does not read.
    pub ignored: Vec<String>,
}

/// The manifest files of `dir` in name order, with their contents.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_manifest && path.is_file() {
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((path, text)),
                // A file removed or unreadable mid-scan is picked up on the next scan.
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot read manifest")
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every document of every file.
pub fn parse(files: &[(PathBuf, String)]) -> Manifests {
    let mut manifests = Manifests::default();
    for (file, text) in files {
        for (position, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let error = |reason: String| ManifestError {
                file: file.clone(),
                document: position + 1,
                reason,
            };
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    manifests.errors.push(error(format!("not valid YAML: {e}")));
                    // A syntax error leaves the rest of the stream unreadable.
                    break;
                }
            };
            if let Err(reason) = parse_object(value, &mut manifests) {
                manifests.errors.push(error(reason));
            }
        }
    }
    manifests
}

fn parse_object(value: serde_yaml::Value, manifests: &mut Manifests) -> Result<(), String> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let api_version = field("apiVersion").ok_or("apiVersion is missing")?;
    let kind = field("kind").ok_or("kind is missing")?;
    if kind == "List" || kind.ends_with("List") && api_version == "v1" {
        let items = value
            .get("items")
            .and_then(|i| i.as_sequence())
            .cloned()
            .unwrap_or_default();
        for item in items {
            parse_object(item, manifests)?;
        }
        return Ok(());
    }
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_yaml::Value,
        kind: &str,
    ) -> Result<Box<T>, String> {
        serde_yaml::from_value(value)
            .map(Box::new)
            .map_err(|e| format!("invalid {kind}: {e}"))
    }
    let resource = match (api_version.as_str(), kind.as_str()) {
        ("kube-iap.io/v1alpha1", "IapPolicy") => {
            Resource::IapPolicy(typed::<IapPolicy>(value, &kind)?)
        }
        ("kube-iap.io/v1alpha1", "OAuthClient") => {
            Resource::OAuthClient(typed::<OAuthClient>(value, &kind)?)
        }
        ("v1", "Service") => Resource::Service(typed::<Service>(value, &kind)?),
        ("v1", "Namespace") => Resource::Namespace(typed::<Namespace>(value, &kind)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Resource::EndpointSlice(typed::<EndpointSlice>(value, &kind)?)
        }
        ("networking.k8s.io/v1", "Ingress") => Resource::Ingress(typed::<Ingress>(value, &kind)?),
        ("gateway.networking.k8s.io/v1", "GatewayClass") => {
            Resource::GatewayClass(typed::<GatewayClass>(value, &kind)?)
        }
        ("gateway.networking.k8s.io/v1", "Gateway") => {
            Resource::Gateway(typed::<Gateway>(value, &kind)?)
        }
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            Resource::HttpRoute(typed::<HTTPRoute>(value, &kind)?)
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            Resource::GrpcRoute(typed::<GRPCRoute>(value, &kind)?)
        }
        (
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        ) => Resource::ReferenceGrant(typed::<ReferenceGrant>(value, &kind)?),
        ("v1", "Secret") => {
            Resource::Secret(Box::new(with_string_data(*typed::<Secret>(value, &kind)?)))
        }
        (version, kind) if version.starts_with("kube-iap.io/") => {
            return Err(format!(
                "unknown kube-iap kind {version}/{kind} (this version reads kube-iap.io/v1alpha1 IapPolicy and OAuthClient)"
            ));
        }
        (version, kind) => {
            manifests.ignored.push(format!("{version}/{kind}"));
            return Ok(());
        }
    };
    if resource.meta().name.as_deref().unwrap_or("").is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    manifests.resources.push(resource);
    Ok(())
}

/// The API server folds `stringData` into `data`; a manifests folder gets the same treatment.
fn with_string_data(mut secret: Secret) -> Secret {
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in strings {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    secret
}

/// Gives objects without `creationTimestamp` the time they were first seen, so "the oldest policy
/// wins" means the same in local mode as in a cluster: a newly added file never takes a host away
/// from a policy that was already served.
#[derive(Default)]
pub struct FirstSeen {
    seen: HashMap<(Kind, ObjectKey), Time>,
}

impl FirstSeen {
    pub fn stamp(&mut self, resources: &mut [Resource], now: Time) {
        for resource in resources {
            let id = (resource.kind(), resource.key());
            let meta = resource.meta_mut();
            let cluster_scoped = matches!(id.0, Kind::GatewayClass | Kind::Namespace);
            if meta.namespace.is_none() && !cluster_scoped {
                meta.namespace = Some("default".to_string());
            }
            if meta.creation_timestamp.is_none() {
                meta.creation_timestamp =
                    Some(self.seen.entry(id).or_insert_with(|| now.clone()).clone());
            }
        }
    }
}

/// Re-reads `dir` every `interval` and publishes a new table whenever a manifest changed. The first
/// read happens before this returns, so the proxy starts with the folder's table.
pub struct FolderSource {
    dir: PathBuf,
    session_keys_secret: ObjectKey,
    first_seen: FirstSeen,
    last_fingerprint: Option<u64>,
}

impl FolderSource {
    pub fn new(dir: PathBuf, session_keys_secret: ObjectKey) -> Self {
        FolderSource {
            dir,
            session_keys_secret,
            first_seen: FirstSeen::default(),
            last_fingerprint: None,
        }
    }

    /// Reads the folder; publishes when anything changed. An unreadable folder keeps the last
    /// table: an I/O hiccup must never publish an emptier one.
    pub fn reload(&mut self, published: &Published, metrics: &Metrics) {
        let files = match read_dir(&self.dir) {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(dir = %self.dir.display(), %error, "cannot read the manifests folder; keeping the last table");
                return;
            }
        };
        let fingerprint = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&files, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        if self.last_fingerprint == Some(fingerprint) {
            return;
        }
        self.last_fingerprint = Some(fingerprint);
        let mut manifests = parse(&files);
        for error in &manifests.errors {
            tracing::warn!(file = %error.file.display(), document = error.document, reason = %error.reason, "manifest skipped");
        }
        metrics
            .manifest_errors
            .inc_by(manifests.errors.len() as u64);
        for ignored in &manifests.ignored {
            tracing::info!(kind = %ignored, "kind not read by kube-iap; ignored");
        }
        self.first_seen.stamp(
            &mut manifests.resources,
            Time(k8s_openapi::jiff::Timestamp::now()),
        );
        let mut index = Index::default();
        index.set_session_keys_secret(self.session_keys_secret.clone());
        for resource in manifests.resources {
            index.apply(resource);
        }
        tracing::info!(dir = %self.dir.display(), files = files.len(), "manifests loaded");
        published.publish(&index, manifests.errors, metrics);
    }

    /// Polls until the task is dropped. Polling, not inotify: it works the same on every file
    /// system, including the symlink swaps of mounted ConfigMaps.
    pub async fn run(
        mut self,
        interval: Duration,
        published: Arc<Published>,
        metrics: Arc<Metrics>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (dir, keys_secret) = (self.dir.clone(), self.session_keys_secret.clone());
        loop {
            ticker.tick().await;
            // Reading and parsing a large folder takes a while; keep it off the async threads
            // that accept connections and answer the admin port.
            let (published, metrics) = (published.clone(), metrics.clone());
            let reloaded = tokio::task::spawn_blocking(move || {
                self.reload(&published, &metrics);
                self
            });
            match reloaded.await {
                Ok(source) => self = source,
                Err(error) => {
                    // A bug, never bad input; the last table keeps serving and the next tick
                    // starts over with a fresh reader.
                    tracing::error!(%error, "reading the manifests folder panicked; starting over");
                    self = FolderSource::new(dir.clone(), keys_secret.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Manifests {
        parse(&[(PathBuf::from("test.yaml"), text.to_string())])
    }

    #[test]
    fn reads_every_kind_and_ignores_others_with_a_note() {
        let manifests = parse_text(
            r#"
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp}
spec: {issuer: "http://127.0.0.1:9000", clientId: demo, clientSecretRef: {name: s, key: k}}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {k: value}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
# an empty document is fine
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#,
        );
        assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
        let kinds: Vec<Kind> = manifests.resources.iter().map(Resource::kind).collect();
        assert_eq!(kinds, [Kind::OAuthClient, Kind::Secret, Kind::Service]);
        assert_eq!(manifests.ignored, ["apps/v1/Deployment"]);
        let Resource::Secret(secret) = &manifests.resources[1] else {
            unreachable!()
        };
        assert_eq!(secret.data.as_ref().unwrap()["k"].0, b"value");
        let Resource::OAuthClient(client) = &manifests.resources[0] else {
            unreachable!()
        };
        assert_eq!(
            client.spec.scopes,
            ["openid", "email", "profile"],
            "defaults apply"
        );
    }

    #[test]
    fn a_malformed_document_is_reported_with_file_and_position_and_the_rest_loads() {
        let manifests = parse_text(
            r#"
apiVersion: v1
kind: Service
metadata: {name: good}
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: bad}
spec: {hosts: "not-a-list"}
---
kind: Service
metadata: {name: no-version}
---
apiVersion: v1
kind: Service
metadata: {name: also-good}
"#,
        );
        let names: Vec<String> = manifests.resources.iter().map(|r| r.key().name).collect();
        assert_eq!(names, ["good", "also-good"]);
        assert_eq!(manifests.errors.len(), 2, "{:?}", manifests.errors);
        assert_eq!(manifests.errors[0].document, 2);
        assert!(
            manifests.errors[0].reason.contains("invalid IapPolicy"),
            "{}",
            manifests.errors[0].reason
        );
        assert_eq!(manifests.errors[1].document, 3);
        assert!(
            manifests.errors[1]
                .to_string()
                .starts_with("test.yaml (document 3): apiVersion is missing")
        );
    }

    #[test]
    fn first_seen_times_survive_reloads() {
        let mut first_seen = FirstSeen::default();
        let early = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let late = Time(k8s_openapi::jiff::Timestamp::from_second(200).unwrap());
        let mut first =
            parse_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").resources;
        first_seen.stamp(&mut first, early.clone());
        let mut again = parse_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n").resources;
        first_seen.stamp(&mut again, late.clone());
        assert_eq!(again[0].meta().creation_timestamp, Some(early));
        assert_eq!(again[1].meta().creation_timestamp, Some(late));
        assert_eq!(again[1].meta().namespace.as_deref(), Some("default"));
    }
}
