//! A scripted Kubernetes API server on 127.0.0.1: enough of list, watch, get, create, update and
//! patch for kube-rs's `Client` and kube-runtime's watchers to talk to it as to a real one. Tests
//! put and delete objects, read the status patches and Events the controller sent, take the
//! server down (every call answers 503 and open watches end) and compact its history (the next
//! watch gets 410 Gone, so the watchers relist).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = BoxBody<Bytes, Infallible>;

/// A call the controller made that changed something, for assertions.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// resource ("core/services", "kube-iap.io/iappolicies") → (namespace, name) → object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    version: u64,
    /// (resourceVersion, resource, event type, object), oldest first.
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches asking to resume from before this version get 410 Gone.
    compacted_to: u64,
    writes: Vec<Write>,
    /// Every call as (verb, "group/resource[/subresource]"), in RBAC terms.
    calls: Vec<(String, String)>,
    down: bool,
}

#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped on every change, so open watches wake up.
    changed: watch::Sender<u64>,
}

/// Where an object of this kind lives: ("core" or group, "v1"-style version, plural).
pub fn resource_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "core",
    };
    let plural = match object["kind"].as_str().expect("kind") {
        "IapPolicy" => "iappolicies",
        "OAuthClient" => "oauthclients",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "Secret" => "secrets",
        "Ingress" => "ingresses",
        "Lease" => "leases",
        other => panic!("the scripted API server does not know {other}"),
    };
    format!("{group}/{plural}")
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default").to_string(),
        meta["name"].as_str().expect("metadata.name").to_string(),
    )
}

/// A parsed API path: `/api/v1/...` or `/apis/GROUP/VERSION/...`.
struct ApiPath {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<ApiPath> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("core", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(namespace), rest),
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name), None),
        [plural, name, sub] => (plural, Some(name), Some(sub)),
        _ => return None,
    };
    Some(ApiPath {
        resource: format!("{group}/{plural}"),
        namespace: namespace.map(|n| n.to_string()),
        name: name.map(|n| n.to_string()),
        subresource: subresource.map(|s| s.to_string()),
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("valid response")
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "code": code.as_u16(), "reason": reason, "message": message}),
    )
}

/// The documents of a YAML stream, as JSON.
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

impl ApiServer {
    /// Puts every document of a YAML stream.
    pub fn put_yaml(&self, yaml: &str) {
        for document in yaml_documents(yaml) {
            self.put(document);
        }
    }

    /// The status patches sent for one object, oldest first.
    pub fn status_patches(&self, plural: &str, namespace: &str, name: &str) -> Vec<Write> {
        let suffix = format!("/namespaces/{namespace}/{plural}/{name}/status");
        self.writes()
            .into_iter()
            .filter(|write| write.method == Method::PATCH && write.path.ends_with(&suffix))
            .collect()
    }

    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (changed, _) = watch::channel(0);
        let server = ApiServer {
            addr: listener.local_addr().expect("addr"),
            state: Arc::new(Mutex::new(State {
                version: 1,
                ..State::default()
            })),
            changed,
        };
        let accepting = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = accepting.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().expect("valid URL"));
        kube::Client::try_from(config).expect("client")
    }

    /// Writes a kubeconfig pointing at this server into `dir`, for a `kube-iap controller`
    /// process, and returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: scripted\n\
             clusters: [{{name: scripted, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: scripted, user: {{}}}}]\n\
             contexts: [{{name: scripted, context: {{cluster: scripted, user: scripted}}}}]\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Adds or replaces an object (JSON, with apiVersion, kind and metadata). A Secret's
    /// `stringData` is folded into `data`, as a real API server does.
    pub fn put(&self, mut object: Value) {
        if let Some(strings) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
            use base64::Engine;
            for (key, value) in strings.as_object().into_iter().flatten() {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(value.as_str().unwrap_or_default());
                object["data"][key] = json!(encoded);
            }
        }
        let mut state = self.state.lock().unwrap();
        let resource = resource_of(&object);
        let key = key_of(&object);
        let event = if state
            .objects
            .get(&resource)
            .is_some_and(|objects| objects.contains_key(&key))
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.version += 1;
        let version = state.version;
        let meta = object["metadata"].as_object_mut().expect("metadata");
        meta.insert("namespace".into(), json!(key.0));
        meta.insert("resourceVersion".into(), json!(version.to_string()));
        meta.entry("generation").or_insert(json!(1));
        meta.entry("uid")
            .or_insert(json!(format!("uid-{}-{}", key.1, version)));
        meta.entry("creationTimestamp")
            .or_insert(json!("2026-01-01T00:00:00Z"));
        state
            .objects
            .entry(resource.clone())
            .or_default()
            .insert(key, object.clone());
        state.history.push((version, resource, event, object));
        drop(state);
        self.changed.send_replace(version);
    }

    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let probe = json!({"apiVersion": api_version, "kind": kind});
        let resource = resource_of(&probe);
        let mut state = self.state.lock().unwrap();
        let removed = state
            .objects
            .get_mut(&resource)
            .and_then(|objects| objects.remove(&(namespace.to_string(), name.to_string())));
        if let Some(mut object) = removed {
            state.version += 1;
            let version = state.version;
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            state.history.push((version, resource, "DELETED", object));
            drop(state);
            self.changed.send_replace(version);
        }
    }

    /// The stored object, as the controller last left it (status included).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = resource_of(&json!({"apiVersion": api_version, "kind": kind}));
        let state = self.state.lock().unwrap();
        state
            .objects
            .get(&resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every call so far as (verb, "group/resource[/subresource]"), "core" for the core group.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Every write call so far (POST, PUT, PATCH), oldest first.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Down: every call answers 503 and open watches end. Up again: calls are served.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        let version = self.state.lock().unwrap().version;
        self.changed.send_replace(version);
    }

    /// Forgets the event history, as etcd compaction does: resuming watches get 410 Gone and
    /// the watchers must list again.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.compacted_to = state.version;
        state.history.clear();
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if self.state.lock().unwrap().down {
            return status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the API server is down (scripted)",
            );
        }
        let Some(api) = parse_path(&path) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "unknown path");
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .or_else(|_| serde_yaml::from_slice(&body))
                .unwrap_or(Value::Null)
        };
        let verb = match (&method, &api.name) {
            (&Method::GET, None) if query_param(&query, "watch") == Some("true") => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let resource = match &api.subresource {
            Some(sub) => format!("{}/{sub}", api.resource),
            None => api.resource.clone(),
        };
        self.state
            .lock()
            .unwrap()
            .calls
            .push((verb.to_string(), resource));
        if method != Method::GET {
            self.state.lock().unwrap().writes.push(Write {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                body: body.clone(),
            });
        }
        match (&method, &api.name) {
            (&Method::GET, None) if query_param(&query, "watch") == Some("true") => {
                self.watch(api, &query)
            }
            (&Method::GET, None) => self.list(&api, &query),
            (&Method::GET, Some(name)) => match self.find(&api, name) {
                Some(object) => json_response(StatusCode::OK, &object),
                None => status_response(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            (&Method::POST, None) => self.create(&api, body),
            (&Method::PUT, Some(name)) => self.update(&api, name, body),
            (&Method::PATCH, Some(name)) => self.patch(&api, name, body),
            _ => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not scripted",
            ),
        }
    }

    fn find(&self, api: &ApiPath, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        let namespace = api.namespace.clone().unwrap_or_default();
        state
            .objects
            .get(&api.resource)?
            .get(&(namespace, name.to_string()))
            .cloned()
    }

    fn in_scope(api: &ApiPath, object: &Value) -> bool {
        api.namespace
            .as_deref()
            .is_none_or(|namespace| object["metadata"]["namespace"] == namespace)
    }

    /// A list in pages of `limit` objects, as a real API server serves it (kube-runtime asks
    /// for 500 at a time); `continue` carries the offset of the next page.
    fn list(&self, api: &ApiPath, query: &str) -> Response<Body> {
        let state = self.state.lock().unwrap();
        let in_scope: Vec<&Value> = state
            .objects
            .get(&api.resource)
            .map(|objects| {
                objects
                    .values()
                    .filter(|o| Self::in_scope(api, o))
                    .collect()
            })
            .unwrap_or_default();
        let start = query_param(query, "continue")
            .and_then(|token| token.parse::<usize>().ok())
            .unwrap_or(0)
            .min(in_scope.len());
        let end = query_param(query, "limit")
            .and_then(|limit| limit.parse::<usize>().ok())
            .filter(|limit| *limit > 0)
            .map_or(in_scope.len(), |limit| (start + limit).min(in_scope.len()));
        let items: Vec<Value> = in_scope[start..end].iter().map(|o| (*o).clone()).collect();
        let mut metadata = json!({"resourceVersion": state.version.to_string()});
        if end < in_scope.len() {
            metadata["continue"] = json!(end.to_string());
        }
        json_response(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items}),
        )
    }

    fn watch(&self, api: ApiPath, query: &str) -> Response<Body> {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
        let server = self.clone();
        tokio::spawn(async move {
            let mut changed = server.changed.subscribe();
            // History is append-only between compactions: each wake-up reads only what is new.
            let mut position = {
                let state = server.state.lock().unwrap();
                state
                    .history
                    .partition_point(|(version, ..)| *version <= since)
            };
            if since < server.state.lock().unwrap().compacted_to {
                let gone = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
                    "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"}});
                let _ = sender.send(Bytes::from(format!("{gone}\n"))).await;
                return;
            }
            loop {
                let (events, down) = {
                    let state = server.state.lock().unwrap();
                    if position > state.history.len() {
                        // Compacted under this watch: end it; the client resumes and gets 410.
                        return;
                    }
                    let events: Vec<Value> = state.history[position..]
                        .iter()
                        .filter(|(_, resource, _, object)| {
                            *resource == api.resource && Self::in_scope(&api, object)
                        })
                        .map(|(_, _, kind, object)| json!({"type": kind, "object": object}))
                        .collect();
                    position = state.history.len();
                    (events, state.down)
                };
                if down {
                    return;
                }
                for event in events {
                    if sender
                        .send(Bytes::from(format!("{event}\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::select! {
                    changed = changed.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(30)) => return,
                    _ = sender.closed() => return,
                }
            }
        });
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .expect("valid response")
    }

    fn create(&self, api: &ApiPath, mut object: Value) -> Response<Body> {
        if let Some(namespace) = &api.namespace {
            object["metadata"]["namespace"] = json!(namespace);
        }
        if object["metadata"]["name"].is_null() {
            // Events are created with generateName.
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or("obj-");
            let version = self.state.lock().unwrap().version;
            object["metadata"]["name"] = json!(format!("{prefix}{version}"));
        }
        if api.resource.ends_with("/events") {
            return json_response(StatusCode::CREATED, &object);
        }
        if self.find(api, &key_of(&object).1).is_some() {
            return status_response(StatusCode::CONFLICT, "AlreadyExists", "already exists");
        }
        let name = key_of(&object).1;
        self.put(object);
        json_response(StatusCode::CREATED, &self.find(api, &name).unwrap())
    }

    fn update(&self, api: &ApiPath, name: &str, object: Value) -> Response<Body> {
        let Some(current) = self.find(api, name) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
            return status_response(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified",
            );
        }
        self.put(object);
        json_response(StatusCode::OK, &self.find(api, name).unwrap())
    }

    fn patch(&self, api: &ApiPath, name: &str, patch: Value) -> Response<Body> {
        if api.resource.ends_with("/events") {
            return json_response(StatusCode::OK, &patch);
        }
        let Some(mut current) = self.find(api, name) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        match api.subresource.as_deref() {
            Some("status") => current["status"] = patch["status"].clone(),
            _ => merge(&mut current, &patch),
        }
        self.put(current);
        json_response(StatusCode::OK, &self.find(api, name).unwrap())
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
