//! The translation itself: resources in, routing table and statuses out.

use foldhash::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use super::backends::{self, BackendError, PortSelector, ResolvedBackend, SlicesByService};
use super::clients::{self, ClientHealth};
use super::reuse::{CompiledMap, Inputs};
use super::status::{ComputedStatus, CurrentStatus, Problem};
use super::{Index, Kind, ObjectKey, Snapshot};
use crate::api::{
    DEFAULT_REQUESTS_PER_MINUTE, HOST_ANNOTATION, IapPolicy, IapPolicySpec, POLICY_ANNOTATION,
    PORT_ANNOTATION,
};
use crate::error_codes::ErrorCode;
use crate::model::path;
use crate::model::{
    AccessPolicy, Backend, BackendIdentity, DEFAULT_SESSION_MAX_AGE, RateLimit, Route, RouteAction,
    RoutingTableBuilder, SignIn, TunnelGrant,
};

/// A session shorter than this would send users back to the provider on nearly every click.
const MIN_SESSION_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

pub fn build(index: &Index) -> Snapshot {
    let mut statuses = Vec::with_capacity(index.clients.len() + index.policies.len());
    let mut client_health: HashMap<&ObjectKey, ClientHealth> =
        HashMap::with_capacity_and_hasher(index.clients.len(), Default::default());
    let used: foldhash::HashSet<(&str, &str)> = index
        .policies
        .iter()
        .map(|(key, policy)| {
            (
                key.namespace.as_str(),
                policy.spec.oauth_client_ref.name.as_str(),
            )
        })
        .collect();
    for (key, client) in &index.clients {
        let (health, mut status) = clients::evaluate(key, client, &index.secrets);
        if !used.contains(&(key.namespace.as_str(), key.name.as_str())) {
            clients::mark_unused(&mut status);
        }
        client_health.insert(key, health);
        statuses.push(status);
    }

    let (ingress_paths, ingress_statuses) = super::ingress::attach(index);
    let world = World {
        index,
        client_health,
        slices: SlicesByService::new(index),
        annotated: annotated_services(index),
        ingress_paths,
    };
    let mut builder = RoutingTableBuilder::with_capacity(index.policies.len());
    let mut cache = index.compiled.take();
    let ordered = policies_oldest_first(index);
    let mut compiled_now: CompiledMap =
        HashMap::with_capacity_and_hasher(ordered.len(), Default::default());
    let mut in_order = Vec::with_capacity(ordered.len());
    for &(key, policy) in &ordered {
        let (owned_key, entry) = match cache.remove_entry(key) {
            Some((owned_key, entry)) if entry.0.still_current(&world, key) => (owned_key, entry),
            _ => {
                let inputs = Inputs::of(&world, key, policy);
                let compiled = Arc::new(compile_policy(&world, key, policy));
                (key.clone(), (inputs, compiled))
            }
        };
        in_order.push((key, policy, entry.1.clone()));
        compiled_now.insert(owned_key, entry);
    }
    let gateway = super::gateway::attach(index, &ordered);
    let mut gateway_routes: HashMap<&ObjectKey, usize> = HashMap::default();
    for policy in gateway
        .entries
        .iter()
        .flat_map(|route| route.entries.iter())
        .filter_map(|entry| entry.policy.as_ref())
    {
        *gateway_routes.entry(policy).or_default() += 1;
    }
    let mut claims = Claims::with_capacity(in_order.len());
    for (key, policy, compiled) in &in_order {
        let mut status = emit_routes(key, compiled, &mut claims, &mut builder);
        // The policy is at hand: no lookup by key per status (a fifth of a build at 10,000).
        status.uid = policy.metadata.uid.clone();
        status.current = policy
            .status
            .as_ref()
            .map(|shown| Box::new(CurrentStatus::of_policy(shown)));
        if let Some(ancestors) = gateway.ancestors.get(*key) {
            status.api_status = Some(Arc::from(ancestors.to_string()));
        }
        if let Some(count) = gateway_routes.get(*key).filter(|_| status.ready) {
            status.message = format!(
                "{} Protects {count} Gateway API route match(es).",
                status.message
            );
        }
        statuses.push(status);
    }
    for route in &gateway.entries {
        emit_gateway_routes(route, &compiled_now, &mut claims, &mut builder);
    }
    for (hostname, certificate) in &gateway.certificates {
        builder.add_certificate(hostname, certificate.clone());
    }
    let keys_secret = index.session_keys_secret();
    let keys = super::session_keys::key_ring(&keys_secret.to_string(), index.secret(&keys_secret));
    builder.set_session_keys(keys);
    // The signing keys live next to the session keys.
    let signing_secret = ObjectKey::new(
        &keys_secret.namespace,
        super::signing_keys::DEFAULT_SECRET_NAME,
    );
    builder.set_signing_keys(super::signing_keys::signing_keys(
        &signing_secret.to_string(),
        index.secret(&signing_secret),
    ));
    for status in statuses
        .iter_mut()
        .filter(|status| status.kind == Kind::OAuthClient)
    {
        record_current_status(index, status);
    }
    for mut status in ingress_statuses.into_iter().chain(gateway.statuses) {
        record_current_status(index, &mut status);
        statuses.push(status);
    }
    index.compiled.put(compiled_now);
    Snapshot {
        table: builder.build(),
        statuses,
    }
}

/// Copies the object's uid and present status onto its computed status.
pub(super) fn record_current_status(index: &Index, status: &mut ComputedStatus) {
    let (meta, current) = match status.kind {
        Kind::IapPolicy => match index.policies.get(&status.key) {
            Some(policy) => (
                &policy.metadata,
                policy.status.as_ref().map(CurrentStatus::of_policy),
            ),
            None => return,
        },
        Kind::OAuthClient => match index.clients.get(&status.key) {
            Some(client) => (
                &client.metadata,
                client.status.as_ref().map(CurrentStatus::of_client),
            ),
            None => return,
        },
        Kind::Ingress => match index.ingresses.get(&status.key) {
            Some(ingress) => (
                &ingress.metadata,
                ingress.status.as_ref().map(CurrentStatus::of_ingress),
            ),
            None => return,
        },
        Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute | Kind::GrpcRoute => {
            let meta = match status.kind {
                Kind::GatewayClass => index.gateway_classes.get(&status.key).map(|o| &o.metadata),
                Kind::Gateway => index.gateways.get(&status.key).map(|o| &o.metadata),
                Kind::GrpcRoute => index.grpc_routes.get(&status.key).map(|o| &o.metadata),
                _ => index.http_routes.get(&status.key).map(|o| &o.metadata),
            };
            let Some(meta) = meta else {
                return;
            };
            let current = index
                .gateway_statuses
                .get(&(status.kind, status.key.clone()))
                .map(CurrentStatus::from);
            (meta, current)
        }
        _ => return,
    };
    status.uid = meta.uid.clone();
    status.current = current.map(Box::new);
}

/// Everything a policy's translation looks up.
pub(super) struct World<'a> {
    pub(super) index: &'a Index,
    client_health: HashMap<&'a ObjectKey, ClientHealth>,
    slices: SlicesByService<'a>,
    annotated: HashMap<ObjectKey, Vec<(&'a ObjectKey, &'a Service)>>,
    /// Paths of served Ingresses, by the policy they name.
    ingress_paths: HashMap<ObjectKey, Vec<super::ingress::IngressPath>>,
}

impl World<'_> {
    /// The Services annotated with `policy`.
    pub(super) fn annotated_keys(&self, policy: &ObjectKey) -> impl Iterator<Item = &ObjectKey> {
        self.annotated
            .get(policy)
            .into_iter()
            .flatten()
            .map(|(key, _)| *key)
    }

    /// The paths of served Ingresses that name `policy`.
    pub(super) fn ingress_paths_of(&self, policy: &ObjectKey) -> &[super::ingress::IngressPath] {
        self.ingress_paths.get(policy).map_or(&[], Vec::as_slice)
    }
}

/// What older policies already hold: host + prefix → policy, host → (policy, OAuth client).
/// Borrowed from the compiled policies, so claiming allocates nothing.
#[derive(Default)]
struct Claims<'a> {
    routes: HashMap<(&'a str, &'a str), &'a ObjectKey>,
    host_clients: HashMap<&'a str, (&'a ObjectKey, &'a ObjectKey)>,
}

impl Claims<'_> {
    fn with_capacity(policies: usize) -> Self {
        Claims {
            routes: HashMap::with_capacity_and_hasher(policies, Default::default()),
            host_clients: HashMap::with_capacity_and_hasher(policies, Default::default()),
        }
    }
}

/// One backend of a policy and the hosts it is served on.
struct Target {
    origin: String,
    hosts: Vec<String>,
    /// Path prefixes of its own (an Ingress path); otherwise the policy's `spec.paths`.
    prefixes: Option<Vec<String>>,
    /// The TLS Secret of its own (an Ingress's `spec.tls`); otherwise the policy's `spec.tls`.
    tls_secret: Option<ObjectKey>,
    backend: Result<ResolvedBackend, BackendError>,
}

/// Oldest first, so an older policy keeps what it serves when a newer one claims the same
/// host and path. Objects without a creation time (hand-written manifests) sort last, by name.
fn policies_oldest_first(index: &Index) -> Vec<(&ObjectKey, &IapPolicy)> {
    let mut ordered: Vec<_> = index
        .policies
        .iter()
        .map(|(key, policy)| (key, &**policy))
        .collect();
    ordered.sort_by(|(a_key, a), (b_key, b)| {
        let age = |policy: &IapPolicy| {
            let created = policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0);
            (created.is_none(), created)
        };
        age(a).cmp(&age(b)).then_with(|| a_key.cmp(b_key))
    });
    ordered
}

/// Services that point at a policy with the `kube-iap.io/policy` annotation, by policy.
fn annotated_services(index: &Index) -> HashMap<ObjectKey, Vec<(&ObjectKey, &Service)>> {
    let mut by_policy: HashMap<ObjectKey, Vec<(&ObjectKey, &Service)>> = HashMap::default();
    for (key, service) in &index.services {
        let service: &Service = service;
        let policy = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_ANNOTATION));
        if let Some(policy) = policy {
            by_policy
                .entry(ObjectKey::new(&key.namespace, policy))
                .or_default()
                .push((key, service));
        }
    }
    by_policy
}

/// A policy compiled from its spec and the objects it names, before the oldest-first claims
/// decide which of its routes it keeps.
pub(super) struct CompiledPolicy {
    client_key: ObjectKey,
    generation: Option<i64>,
    /// Makes every route of the policy fail closed.
    fatal: Option<Problem>,
    problems: Vec<Problem>,
    access: Arc<AccessPolicy>,
    sign_in: Option<Arc<SignIn>>,
    backend_identity: Arc<BackendIdentity>,
    /// Kept across builds while the policy is unchanged, so its count does not start over.
    rate_limit: Arc<RateLimit>,
    tunnel: Option<Arc<TunnelGrant>>,
    targets: Vec<CompiledTarget>,
    /// Its routes when no older policy contests any of them, made on first use.
    unopposed_routes: std::sync::OnceLock<Vec<Arc<Route>>>,
    /// Its status in that case, made on first use: formatting 10,000 messages was a tenth of a
    /// build after one change.
    unopposed_status: std::sync::OnceLock<ComputedStatus>,
}

impl CompiledPolicy {
    /// What a route of this policy does: fail closed on the policy's own problem or its host's,
    /// else forward to `backend`, or fail closed saying why there is none.
    fn action(
        &self,
        host_problem: Option<&Problem>,
        backend: Result<&Arc<Backend>, String>,
    ) -> RouteAction {
        match (self.fatal.as_ref().or(host_problem), backend) {
            (Some(problem), _) => RouteAction::FailClosed {
                code: problem.code,
                reason: problem.detail.clone(),
            },
            (None, Ok(backend)) => RouteAction::Forward(backend.clone()),
            (None, Err(reason)) => RouteAction::FailClosed { code: None, reason },
        }
    }
}

struct CompiledTarget {
    hosts: Vec<String>,
    prefixes: Vec<String>,
    certificate: Option<Arc<rustls::sign::CertifiedKey>>,
    /// The backend to forward to, or why there is none.
    backend: Result<Arc<Backend>, String>,
}

fn compile_policy(world: &World<'_>, key: &ObjectKey, policy: &IapPolicy) -> CompiledPolicy {
    let spec = &policy.spec;
    let mut problems = Vec::new();
    // A problem that makes every route of the policy fail closed.
    let mut fatal: Option<Problem> = None;

    let client_key = ObjectKey::new(&key.namespace, &spec.oauth_client_ref.name);
    let mut client = None;
    match world.client_health.get(&client_key) {
        None => {
            fatal = Some(Problem::new(
                "OAuthClientNotFound",
                Some(ErrorCode::InvalidToken),
                format!("OAuthClient {client_key} named by spec.oauthClientRef does not exist."),
            ))
        }
        Some(Err(problem)) => {
            fatal = Some(Problem::new(
                problem.reason,
                problem.code,
                format!("OAuthClient {client_key}: {}", problem.detail),
            ))
        }
        Some(Ok(healthy)) => client = Some(healthy.clone()),
    }
    let session_max_age = match spec.session.as_ref().and_then(|s| s.max_age.as_ref()) {
        None => DEFAULT_SESSION_MAX_AGE,
        Some(duration) => match std::time::Duration::from(*duration) {
            max_age if !duration.is_negative() && max_age >= MIN_SESSION_MAX_AGE => max_age,
            _ => {
                problems.push(Problem::new(
                    "InvalidSpec",
                    None,
                    format!(
                        "spec.session.maxAge {duration} is shorter than {}s; using the default of {}s.",
                        MIN_SESSION_MAX_AGE.as_secs(),
                        DEFAULT_SESSION_MAX_AGE.as_secs()
                    ),
                ));
                DEFAULT_SESSION_MAX_AGE
            }
        },
    };
    let backend_identity = Arc::new(BackendIdentity {
        assertion_audience: spec
            .signed_headers
            .as_ref()
            .and_then(|signed| signed.audience.clone())
            .unwrap_or_else(|| format!("/namespaces/{}/iappolicies/{}", key.namespace, key.name)),
        include_groups: spec
            .signed_headers
            .as_ref()
            .is_some_and(|signed| signed.include_groups),
        google_compatible: spec.google_compatible_headers,
        pass_authorization: spec.pass_authorization_header,
    });
    let rate_limit = Arc::new(RateLimit::per_minute(
        spec.rate_limit
            .as_ref()
            .map_or(DEFAULT_REQUESTS_PER_MINUTE, |limit| {
                limit.requests_per_minute
            }),
    ));
    let tunnel = tunnel_grant(world, key, spec, &mut problems);
    let sign_in = client.map(|client| {
        Arc::new(SignIn {
            client,
            session_max_age,
        })
    });

    let access = match super::access::parse_access(spec) {
        Ok(access) => access,
        Err(detail) => {
            fatal.get_or_insert(Problem::new("InvalidSpec", None, detail));
            AccessPolicy::default()
        }
    };
    let access = Arc::new(access);
    problems.extend(fatal.clone());

    let prefixes = normalized_prefixes(&spec.paths, &mut problems);
    let targets = targets(world, key, spec, &mut problems);

    let certificate = spec.tls.as_ref().and_then(|tls| {
        let secret_key = ObjectKey::new(&key.namespace, &tls.secret_name);
        super::tls::certified_key(&secret_key.to_string(), world.index.secret(&secret_key))
            .map_err(|error| {
                problems.push(Problem::new("TlsSecretInvalid", None, format!("{error}.")))
            })
            .ok()
    });

    let targets = targets
        .into_iter()
        .map(|target| {
            let own_certificate = target.tls_secret.as_ref().and_then(|secret_key| {
                super::tls::certified_key(&secret_key.to_string(), world.index.secret(secret_key))
                    .map_err(|error| {
                        problems.push(Problem::new(
                            "TlsSecretInvalid",
                            None,
                            format!("{error} ({}).", target.origin),
                        ))
                    })
                    .ok()
            });
            CompiledTarget {
                backend: match &target.backend {
                    Ok(resolved) => Ok(Arc::new(Backend::new(
                        resolved.name.clone(),
                        resolved.upstreams.clone(),
                    ))),
                    Err(error) => Err(format!("{} ({})", error, target.origin)),
                },
                prefixes: target.prefixes.unwrap_or_else(|| prefixes.clone()),
                certificate: own_certificate.or_else(|| certificate.clone()),
                hosts: target.hosts,
            }
        })
        .collect();
    CompiledPolicy {
        client_key,
        generation: policy.metadata.generation,
        fatal,
        problems,
        access,
        sign_in,
        backend_identity,
        rate_limit,
        tunnel,
        targets,
        unopposed_routes: std::sync::OnceLock::new(),
        unopposed_status: std::sync::OnceLock::new(),
    }
}

/// Adds the routes of a compiled policy that no older policy holds, and says how it went.
fn emit_routes<'a>(
    key: &'a ObjectKey,
    compiled: &'a CompiledPolicy,
    claims: &mut Claims<'a>,
    builder: &mut RoutingTableBuilder,
) -> ComputedStatus {
    for target in &compiled.targets {
        if let Some(certificate) = &target.certificate {
            for host in &target.hosts {
                builder.add_certificate(host, certificate.clone());
            }
        }
    }
    if !contested(key, compiled, claims) {
        // The common case: nothing older claims any of it, so the routes are those the policy
        // has on its own, made once and shared by every table until the policy changes.
        let routes = compiled.unopposed_routes.get_or_init(|| {
            let mut alone = Claims::default();
            let mut routes = Vec::new();
            emit(key, compiled, &mut alone, &mut routes);
            routes
        });
        claim_all(key, compiled, claims);
        for route in routes {
            builder.add_route(route.clone());
        }
        return compiled
            .unopposed_status
            .get_or_init(|| policy_status(key, compiled, &compiled.problems, routes.len()))
            .clone();
    }
    let mut routes = Vec::new();
    let problems = emit(key, compiled, claims, &mut routes);
    let served = routes.len();
    for route in routes {
        builder.add_route(route);
    }
    policy_status(key, compiled, &problems, served)
}

fn policy_status(
    key: &ObjectKey,
    compiled: &CompiledPolicy,
    problems: &[Problem],
    served: usize,
) -> ComputedStatus {
    ComputedStatus::from_problems(
        Kind::IapPolicy,
        key.clone(),
        compiled.generation,
        problems,
        format!("Serving {served} route(s)."),
    )
}

/// Whether an older policy holds a host and prefix of this one, or one of its hosts with
/// another OAuth client.
fn contested(key: &ObjectKey, compiled: &CompiledPolicy, claims: &Claims<'_>) -> bool {
    compiled.targets.iter().any(|target| {
        target.hosts.iter().any(|host| {
            let other_client = claims
                .host_clients
                .get(host.as_str())
                .is_some_and(|(_, client)| *client != &compiled.client_key);
            other_client
                || target.prefixes.iter().any(|prefix| {
                    claims
                        .routes
                        .get(&(host.as_str(), prefix.as_str()))
                        .is_some_and(|owner| *owner != key)
                })
        })
    })
}

/// Records every host and prefix of an uncontested policy as its own.
fn claim_all<'a>(key: &'a ObjectKey, compiled: &'a CompiledPolicy, claims: &mut Claims<'a>) {
    for target in &compiled.targets {
        for host in &target.hosts {
            claims
                .host_clients
                .entry(host)
                .or_insert((key, &compiled.client_key));
            for prefix in &target.prefixes {
                claims.routes.entry((host, prefix)).or_insert(key);
            }
        }
    }
}

/// The routes of `compiled` that `claims` leave it, and its problems including the conflicts.
fn emit<'a>(
    key: &'a ObjectKey,
    compiled: &'a CompiledPolicy,
    claims: &mut Claims<'a>,
    routes: &mut Vec<Arc<Route>>,
) -> Vec<Problem> {
    let mut problems = compiled.problems.clone();
    for target in &compiled.targets {
        for host in &target.hosts {
            let host_problem =
                claim_host_client(claims, host, key, &compiled.client_key, &mut problems);
            for prefix in &target.prefixes {
                let slot = (host.as_str(), prefix.as_str());
                if let Some(owner) = claims.routes.get(&slot) {
                    if *owner != key {
                        problems.push(Problem::new(
                            "RouteConflict",
                            None,
                            format!(
                                "{host}{prefix} is already served by the older IapPolicy {owner}."
                            ),
                        ));
                    }
                    continue;
                }
                claims.routes.insert(slot, key);
                let action = compiled.action(
                    host_problem.as_ref(),
                    target.backend.as_ref().map_err(Clone::clone),
                );
                routes.push(Arc::new(Route {
                    policy: key.to_string(),
                    host: host.clone(),
                    prefix: prefix.clone(),
                    conditions: None,
                    rank: 0,
                    filters: None,
                    access: compiled.access.clone(),
                    action,
                    sign_in: compiled.sign_in.clone(),
                    backend_identity: compiled.backend_identity.clone(),
                    rate_limit: compiled.rate_limit.clone(),
                    tunnel: compiled.tunnel.clone(),
                }));
            }
        }
    }
    problems
}

/// The table routes of one Gateway API route's entries. Those the last build made are used
/// again while each entry's policy compiled to the same thing and no older policy contests a
/// host (the common case after a change elsewhere); otherwise they are made anew.
fn emit_gateway_routes<'a>(
    route: &'a super::gateway::RouteEntries,
    compiled_now: &'a CompiledMap,
    claims: &mut Claims<'a>,
    builder: &mut RoutingTableBuilder,
) {
    let mut policies = Vec::with_capacity(route.entries.len());
    let mut host_problems = Vec::with_capacity(route.entries.len());
    for entry in &route.entries {
        let compiled = entry
            .policy
            .as_ref()
            .and_then(|policy| Some((policy, &compiled_now.get(policy)?.1)));
        // Every entry claims its host, whether its routes are made or reused.
        let problem = compiled.and_then(|(policy, compiled)| {
            let mut ignored = Vec::new();
            claim_host_client(
                claims,
                &entry.hostname,
                policy,
                &compiled.client_key,
                &mut ignored,
            )
        });
        policies.push(compiled.map(|(_, compiled)| compiled.clone()));
        host_problems.push(problem);
    }
    let mut kept = route
        .table_routes
        .lock()
        .expect("the table routes lock is never poisoned");
    let reusable = host_problems.iter().all(Option::is_none)
        && kept.as_ref().is_some_and(|kept| {
            kept.policies.len() == policies.len()
                && kept.policies.iter().zip(&policies).all(|pair| match pair {
                    (Some(kept), Some(now)) => Arc::ptr_eq(kept, now),
                    (None, None) => true,
                    _ => false,
                })
        });
    if !reusable {
        let routes = route
            .entries
            .iter()
            .zip(&policies)
            .zip(&host_problems)
            .map(|((entry, compiled), problem)| {
                Arc::new(gateway_route(entry, compiled.as_deref(), problem.as_ref()))
            })
            .collect();
        let made = super::gateway::TableRoutes { policies, routes };
        // Routes made around a contested host are not kept: the contest may end.
        if host_problems.iter().all(Option::is_none) {
            *kept = Some(made);
        } else {
            *kept = None;
            for table_route in made.routes {
                builder.add_route(table_route);
            }
            return;
        }
    }
    for table_route in &kept.as_ref().expect("kept just above").routes {
        builder.add_route(table_route.clone());
    }
}

/// The table route of one Gateway API entry, protected by `compiled` (its policy), or refused
/// when no policy covers it.
fn gateway_route(
    entry: &super::gateway::RouteEntry,
    compiled: Option<&CompiledPolicy>,
    host_problem: Option<&Problem>,
) -> Route {
    let redirect = entry.redirect.clone().map(RouteAction::Redirect);
    let (name, action) = match (compiled, &entry.policy) {
        (Some(compiled), Some(policy)) => {
            let action = redirect.unwrap_or_else(|| {
                compiled.action(
                    host_problem,
                    entry.backend.as_ref().map_err(|reason| {
                        format!("{} {}: {reason}", entry.route_kind.name(), entry.route)
                    }),
                )
            });
            (policy.to_string(), action)
        }
        // A redirect reaches no backend: it needs no policy.
        _ => (
            format!(
                "{}:{}",
                entry.route_kind.name().to_ascii_lowercase(),
                entry.route
            ),
            redirect.unwrap_or_else(|| RouteAction::Unprotected {
                reason: format!(
                    "no IapPolicy protects {} {}",
                    entry.route_kind.name(),
                    entry.route
                ),
            }),
        ),
    };
    let no_policy = || {
        Arc::new(BackendIdentity {
            assertion_audience: String::new(),
            include_groups: false,
            google_compatible: false,
            pass_authorization: false,
        })
    };
    Route {
        policy: name,
        host: entry.hostname.clone(),
        prefix: entry.path.clone(),
        conditions: Some(Arc::new(entry.conditions.clone())),
        rank: entry.rank,
        filters: entry.filters.clone(),
        access: compiled.map_or_else(Arc::default, |c| c.access.clone()),
        action,
        sign_in: compiled.and_then(|c| c.sign_in.clone()),
        backend_identity: compiled.map_or_else(no_policy, |c| c.backend_identity.clone()),
        rate_limit: compiled.map_or_else(
            || Arc::new(RateLimit::per_minute(DEFAULT_REQUESTS_PER_MINUTE)),
            |c| c.rate_limit.clone(),
        ),
        tunnel: compiled.and_then(|c| c.tunnel.clone()),
    }
}

/// Records the OAuth client of the first (oldest) policy on `host`; a newer policy with another
/// client gets code 9 for that host, because one browser session cannot serve two clients.
fn claim_host_client<'a>(
    claims: &mut Claims<'a>,
    host: &'a str,
    policy: &'a ObjectKey,
    client: &'a ObjectKey,
    problems: &mut Vec<Problem>,
) -> Option<Problem> {
    let (owner, owner_client) = *claims.host_clients.entry(host).or_insert((policy, client));
    if owner_client == client {
        return None;
    }
    let problem = Problem::new(
        "OAuthClientConflict",
        Some(ErrorCode::OAuthFlowFailed),
        format!(
            "Host {host} is served by the older IapPolicy {owner} with OAuthClient {owner_client}, not {client}."
        ),
    );
    problems.push(problem.clone());
    Some(problem)
}

/// `spec.tcpForwarding` with each port resolved on the policy's backend Service.
fn tunnel_grant(
    world: &World<'_>,
    key: &ObjectKey,
    spec: &IapPolicySpec,
    problems: &mut Vec<Problem>,
) -> Option<Arc<TunnelGrant>> {
    let forwarding = spec.tcp_forwarding.as_ref()?;
    let members = match forwarding
        .members
        .iter()
        .map(|member| member.parse::<crate::model::Member>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(members) => members,
        Err(error) => {
            problems.push(Problem::new(
                "InvalidSpec",
                None,
                format!("spec.tcpForwarding.members: {error}; tunnels are closed."),
            ));
            return None;
        }
    };
    let service_key = spec
        .backend
        .as_ref()
        .map(|backend| ObjectKey::new(&key.namespace, &backend.service));
    let ports = forwarding
        .ports
        .iter()
        .map(|port| {
            let resolved = match &service_key {
                None => Err("spec.backend names no Service to tunnel to".to_string()),
                Some(service_key) => backends::resolve(
                    service_key,
                    world.index.service(service_key),
                    &PortSelector::Number(*port),
                    &world.slices,
                )
                .map(|resolved| resolved.upstreams)
                .map_err(|error| error.to_string()),
            };
            (*port, resolved)
        })
        .collect();
    Some(Arc::new(TunnelGrant { members, ports }))
}

fn normalized_prefixes(paths: &[String], problems: &mut Vec<Problem>) -> Vec<String> {
    let mut prefixes = Vec::with_capacity(paths.len());
    for raw in paths {
        match path::normalize(raw) {
            Ok(prefix) if !prefixes.contains(&prefix) => prefixes.push(prefix),
            Ok(_) => {}
            Err(error) => problems.push(Problem::new(
                "InvalidSpec",
                None,
                format!("spec.paths {raw:?}: {error}."),
            )),
        }
    }
    prefixes
}

/// The policy's backends: `spec.backend` on `spec.hosts`, plus every Service annotated with this
/// policy, on its `kube-iap.io/host` or else on `spec.hosts`.
fn targets(
    world: &World<'_>,
    key: &ObjectKey,
    spec: &IapPolicySpec,
    problems: &mut Vec<Problem>,
) -> Vec<Target> {
    let spec_hosts = valid_hosts(&spec.hosts, "spec.hosts", problems);
    let mut targets = Vec::new();
    if let Some(backend) = &spec.backend {
        let service_key = ObjectKey::new(&key.namespace, &backend.service);
        targets.push(Target {
            origin: "spec.backend".to_string(),
            hosts: spec_hosts.clone(),
            prefixes: None,
            tls_secret: None,
            backend: backends::resolve(
                &service_key,
                world.index.service(&service_key),
                &PortSelector::Number(backend.port),
                &world.slices,
            ),
        });
    }
    for (service_key, service) in world.annotated.get(key).into_iter().flatten() {
        let annotation = |name| {
            service
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(name))
        };
        let origin = format!("Service {service_key}");
        let hosts = match annotation(HOST_ANNOTATION) {
            Some(host) => valid_hosts(
                std::slice::from_ref(host),
                &format!("{origin} annotation {HOST_ANNOTATION}"),
                problems,
            ),
            None => spec_hosts.clone(),
        };
        let selector = annotation(PORT_ANNOTATION)
            .map_or(PortSelector::Only, |port| PortSelector::parse(port));
        let backend = backends::resolve(service_key, Some(service), &selector, &world.slices);
        targets.push(Target {
            origin,
            hosts,
            prefixes: None,
            tls_secret: None,
            backend,
        });
    }
    for path in world.ingress_paths.get(key).into_iter().flatten() {
        let origin = format!("Ingress {}", path.ingress);
        let hosts = valid_hosts(
            std::slice::from_ref(&path.host),
            &format!("{origin} host"),
            problems,
        );
        let prefixes = normalized_prefixes(std::slice::from_ref(&path.path), problems);
        if prefixes.is_empty() {
            continue;
        }
        targets.push(Target {
            backend: backends::resolve(
                &path.service,
                world.index.service(&path.service),
                &path.port,
                &world.slices,
            ),
            origin,
            hosts,
            prefixes: Some(prefixes),
            tls_secret: path.tls_secret.clone(),
        });
    }

    for target in &targets {
        if let Err(error) = &target.backend {
            problems.push(Problem::new(
                "BackendNotFound",
                None,
                format!("{error} ({}).", target.origin),
            ));
        }
        if target.hosts.is_empty() {
            problems.push(Problem::new(
                "NoHosts",
                None,
                format!(
                    "{} has no host: set spec.hosts or {HOST_ANNOTATION}.",
                    target.origin
                ),
            ));
        }
    }
    if targets.is_empty() && !spec.target_refs.is_empty() {
        // Attached to Gateway API objects only: their routes are its targets.
        return targets;
    }
    if targets.is_empty() {
        problems.push(Problem::new(
            "NoBackend",
            None,
            format!(
                "No backend: set spec.backend or annotate a Service with {POLICY_ANNOTATION}: {}.",
                key.name
            ),
        ));
        // The hosts still answer, failing closed, rather than falling through to another route.
        targets.push(Target {
            origin: "spec.backend".to_string(),
            hosts: spec_hosts,
            prefixes: None,
            tls_secret: None,
            backend: Err(BackendError::ServiceNotFound(ObjectKey::new(
                &key.namespace,
                "(none)",
            ))),
        });
    }
    targets
}

fn valid_hosts(hosts: &[String], field: &str, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut valid = Vec::with_capacity(hosts.len());
    for host in hosts {
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= 253
            && lower.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            if !valid.contains(&lower) {
                valid.push(lower);
            }
        } else {
            problems.push(Problem::new(
                "InvalidHost",
                None,
                format!("{field}: {host:?} is not a DNS host name (no scheme, port or path)."),
            ));
        }
    }
    valid
}
