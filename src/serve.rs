//! The proxy, the admin port and a source of objects (a manifests folder for `kube-iap serve`,
//! the Kubernetes API for `kube-iap controller`), wired together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, Admin};
use crate::auth::assertion::{Jwks, SigningKey, SigningKeys};
use crate::auth::idp_http::IdpHttp;
use crate::auth::login::Logins;
use crate::auth::providers::Providers;
use crate::auth::session::KeyRing;
use crate::controller::{self, ClusterConfig};
use crate::index::ObjectKey;
use crate::metrics::Metrics;
use crate::model::AddressLimit;
use crate::proxy::{self, AuthShared, ProxyConfig, Workers};
use crate::publish::Published;
use crate::shutdown::until_stopped;
use crate::source::files::FolderSource;

/// Where the objects come from.
#[derive(Clone)]
pub enum Source {
    /// A folder of manifests, read at start and then every `reload_interval`.
    Folder {
        dir: PathBuf,
        reload_interval: Duration,
    },
    /// The Kubernetes API: watches, leader election and the status writer.
    Cluster(Box<ClusterConfig>),
}

#[derive(Clone)]
pub struct ServeConfig {
    pub source: Source,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The Secret holding the session key ring (`default/kube-iap-session-keys` when unset).
    pub session_keys_secret: Option<ObjectKey>,
    pub proxy: ProxyConfig,
}

/// A started server: its bound addresses, and the handle that stops it.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, lets open requests finish (bounded), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Runs until ctrl-c or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Binds every listener, loads the folder once, then serves in background tasks.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    if let Source::Folder { dir, .. } = &config.source {
        anyhow::ensure!(
            dir.is_dir(),
            "the manifests folder {} does not exist or is not a folder",
            dir.display()
        );
    }
    let http = match config.http_addr {
        Some(addr) => Some(bind(addr, "HTTP").await?),
        None => None,
    };
    let https = match config.https_addr {
        Some(addr) => Some(bind(addr, "HTTPS").await?),
        None => None,
    };
    let admin_listener = bind(config.admin_addr, "the admin port").await?;

    let metrics = Arc::new(Metrics::new());
    let published = Published::new();
    let mut folder = match &config.source {
        Source::Folder {
            dir,
            reload_interval,
        } => {
            let mut folder = FolderSource::new(dir.clone(), session_keys_secret(&config));
            // The first table is there before the first request.
            folder.reload(&published, &metrics);
            Some((folder, *reload_interval))
        }
        Source::Cluster(_) => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    if folder.is_some() && published.table.load().session_keys.is_none() {
        tracing::warn!(
            secret = %session_keys_secret(&config),
            "no session keys Secret: using a key generated at start, so sign-ins will not survive a restart \
             and replicas will not share sessions"
        );
    }
    let providers = Providers::new(
        IdpHttp::new(config.proxy.idp_timeout / 2, config.proxy.idp_timeout),
        config.proxy.key_refresh_interval,
    );
    let jwks = Arc::new(Jwks::default());
    let fallback_signing_keys =
        Arc::new(SigningKeys::new(vec![SigningKey::generate()]).expect("one key"));
    let logins = Arc::new(Logins::new(providers.clone()));
    let auth = AuthShared {
        fallback_keys: Arc::new(KeyRing::generate()),
        logins: logins.clone(),
        fallback_signing_keys: fallback_signing_keys.clone(),
        jwks: jwks.clone(),
        assertion_issuer: config.proxy.assertion_issuer.clone().into(),
        sign_in_limit: Arc::new(AddressLimit::per_minute(config.proxy.sign_in_per_minute)),
    };
    if folder.is_some() && published.table.load().signing_keys.is_none() {
        tracing::warn!(
            secret = %ObjectKey::new(&session_keys_secret(&config).namespace, crate::index::DEFAULT_SIGNING_KEYS_SECRET),
            "no assertion signing keys Secret: using a key generated at start, so backends must fetch \
             /_iap/jwks.json again after a restart and replicas sign with different keys"
        );
    }
    let workers = Arc::new(Workers::start(
        config.proxy.workers,
        published.table.clone(),
        metrics.clone(),
        config.proxy.clone(),
        auth,
    )?);
    let mut tasks = JoinSet::new();
    let running_addrs = (
        http.as_ref().map(|l| l.local_addr()).transpose()?,
        https.as_ref().map(|l| l.local_addr()).transpose()?,
        admin_listener.local_addr()?,
    );
    if let Some(listener) = http {
        tasks.spawn(proxy::serve_plain(
            listener,
            workers.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(listener) = https {
        let tls = proxy::server_config(published.table.clone());
        tasks.spawn(proxy::serve_tls(
            listener,
            tls,
            workers.clone(),
            shutdown_rx.clone(),
        ));
    }
    tasks.spawn(
        providers
            .clone()
            .keep_fresh(published.table.clone(), shutdown_rx.clone()),
    );
    tasks.spawn(probe_clients(
        logins.clone(),
        published.table.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(remember_signing_keys(
        published.table.clone(),
        jwks.clone(),
        fallback_signing_keys.clone(),
        shutdown_rx.clone(),
    ));
    let admin = Arc::new(Admin {
        published: published.clone(),
        metrics: metrics.clone(),
        providers,
        jwks,
        fallback_signing_keys,
    });
    let admin_providers = admin.providers.clone();
    tasks.spawn(admin::serve(admin_listener, admin, shutdown_rx.clone()));
    if let Some((source, interval)) = folder.take() {
        let (published, metrics, mut stop) =
            (published.clone(), metrics.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = source.run(interval, published, metrics) => {}
                _ = until_stopped(&mut stop) => {}
            }
        });
    }
    if let Source::Cluster(cluster) = config.source.clone() {
        controller::spawn(
            *cluster,
            session_keys_secret(&config),
            published.clone(),
            metrics.clone(),
            admin_providers,
            &mut tasks,
            shutdown_rx.clone(),
        );
    }

    let (http_addr, https_addr, admin_addr) = running_addrs;
    for (name, addr) in [
        ("http", http_addr),
        ("https", https_addr),
        ("admin", Some(admin_addr)),
    ] {
        if let Some(addr) = addr {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        published,
        metrics,
        shutdown,
        tasks,
    })
}

/// Keeps the published key set aware of every signing key that was current, so a key removed
/// from its Secret stays published until the assertions it signed have expired.
async fn remember_signing_keys(
    table: proxy::SharedTable,
    jwks: Arc<Jwks>,
    fallback: Arc<SigningKeys>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_stopped(&mut stop) => return,
        }
        let keys = table.load().signing_keys.clone();
        jwks.observe(keys.as_deref().unwrap_or(&fallback));
    }
}

/// Checks each OAuthClient's credentials at its token endpoint when it appears or changes and
/// every [`PROBE_EVERY`], so a wrong client secret shows as code 11 before anyone signs in.
/// At most one probe per client per [`PROBE_AT_MOST_EVERY`], whatever the edits.
async fn probe_clients(
    logins: Arc<Logins>,
    table: proxy::SharedTable,
    mut stop: watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::time::Instant;
    const PROBE_EVERY: Duration = Duration::from_secs(15 * 60);
    const PROBE_AT_MOST_EVERY: Duration = Duration::from_secs(10);
    const RETRY_UNREACHABLE: Duration = Duration::from_secs(30);
    let mut probed: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_stopped(&mut stop) => return,
        }
        let mut clients = HashMap::new();
        for route in table.load().routes() {
            if let Some(sign_in) = &route.sign_in {
                clients.insert(sign_in.client.name.clone(), sign_in.client.clone());
            }
        }
        probed.retain(|name, _| clients.contains_key(name));
        for (name, client) in clients {
            // Held in memory only, never shown: tells a changed secret from the same one.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (
                &client.issuer,
                &client.client_id,
                client.client_secret.expose(),
            )
                .hash(&mut hasher);
            let fingerprint = hasher.finish();
            let due = match probed.get(&name) {
                None => true,
                Some((seen, at)) => {
                    at.elapsed() >= PROBE_EVERY
                        || (*seen != fingerprint && at.elapsed() >= PROBE_AT_MOST_EVERY)
                }
            };
            if due {
                let verdict = logins.probe_client(&client).await;
                tracing::debug!(client = %client.name, ?verdict, "client credentials probed");
                // An unreachable provider is asked again soon rather than in 15 minutes.
                let at = match verdict {
                    Some(_) => Instant::now(),
                    None => Instant::now()
                        .checked_sub(PROBE_EVERY - RETRY_UNREACHABLE)
                        .unwrap_or_else(Instant::now),
                };
                probed.insert(name, (fingerprint, at));
            }
        }
    }
}

fn session_keys_secret(config: &ServeConfig) -> ObjectKey {
    config
        .session_keys_secret
        .clone()
        .unwrap_or_else(|| ObjectKey::new("default", crate::index::DEFAULT_SESSION_KEYS_SECRET))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler only fails outside a Tokio runtime");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
