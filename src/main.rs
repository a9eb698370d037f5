use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube_iap::controller::ClusterConfig;
use kube_iap::index::ObjectKey;
use kube_iap::proxy::ProxyConfig;
use kube_iap::serve::{self, ServeConfig};
use kube_iap::telemetry::{self, LogFormat};

// The proxy allocates small, short-lived buffers per request; mimalloc serves them with far less
// contention between worker threads than the system allocator.
#[global_allocator]
static ALLOCATOR: kube_iap::allocator::Allocator = kube_iap::allocator::Allocator;

/// kube-iap: an Identity-Aware Proxy for Kubernetes.
#[derive(Parser)]
#[command(name = "kube-iap", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes described by a folder of manifests (local mode, no cluster needed).
    Serve(Box<ServeArgs>),
    /// Watch a Kubernetes cluster (in a Pod, or outside with KUBECONFIG), serve its IapPolicies
    /// and write their status; the replica holding the leader Lease writes.
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions (IapPolicy, OAuthClient) as YAML.
    Crds,
    /// Explain why a request would be allowed or denied, rule by rule, from a manifests folder.
    Explain(ExplainArgs),
    /// Carry TCP connections to a Service port through the proxy (TCP forwarding).
    Tunnel(TunnelArgs),
    /// Sign in for the command-line tools (authorization code flow with PKCE and a loopback
    /// redirect); the ID token is cached for `kube-iap tunnel`.
    Login(LoginArgs),
    /// Print a current ID token from `kube-iap login`'s cache, renewed with the refresh token
    /// when it nears expiry, for scripts: curl -H "Authorization: Bearer $(kube-iap token)" URL.
    Token {
        /// The token cache `kube-iap login` wrote (default: ~/.config/kube-iap/token.json).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Print shell completions: `kube-iap completions bash > /etc/bash_completion.d/kube-iap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the error-code troubleshooting table (Markdown): code, meaning, where it shows, what
    /// to do.
    Codes,
    /// Check an x-kube-iap-jwt-assertion as a backend should: print its claims, or exactly why
    /// it is invalid (exit status 1).
    VerifyAssertion(VerifyArgs),
}

#[derive(clap::Args)]
struct TunnelArgs {
    /// The proxy's URL for the policy's host, e.g. https://db.example.com.
    #[arg(long)]
    url: url::Url,
    /// The Service port to reach (listed in the policy's spec.tcpForwarding.ports).
    #[arg(long)]
    port: u16,
    /// Accept local connections here (e.g. 127.0.0.1:2222); port 0 picks one and prints it.
    #[arg(long, conflicts_with = "stdio")]
    listen: Option<SocketAddr>,
    /// Carry one connection on stdin/stdout, for `ssh -o ProxyCommand`.
    #[arg(long)]
    stdio: bool,
    /// File holding the ID token.
    #[arg(long, conflicts_with = "token_command")]
    token_file: Option<PathBuf>,
    /// Shell command printing a fresh ID token, run for every connection.
    #[arg(long)]
    token_command: Option<String>,
    /// Extra certificate authorities (PEM) for a proxy with a private CA.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The token cache `kube-iap login` wrote, used when no other token is given (default:
    /// ~/.config/kube-iap/token.json).
    #[arg(long)]
    token_cache: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LoginArgs {
    /// The identity provider's issuer URL (the OAuthClient's spec.issuer).
    #[arg(long)]
    issuer: String,
    /// The OAuth client ID (register http://127.0.0.1/_iap/callback, any port, as a redirect URI).
    #[arg(long)]
    client_id: String,
    /// The client secret, for providers that treat the CLI as a confidential client.
    #[arg(long, env = "KUBE_IAP_CLIENT_SECRET")]
    client_secret: Option<String>,
    /// Scopes to ask for.
    #[arg(long, value_delimiter = ',', default_value = "openid,email,profile")]
    scopes: Vec<String>,
    /// Where to cache the token (default: ~/.config/kube-iap/token.json).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print the sign-in URL only; do not try to open a browser.
    #[arg(long)]
    no_browser: bool,
    /// Loopback port for the provider's redirect (default: any free port), for providers that
    /// match http://127.0.0.1:PORT/_iap/callback exactly.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Folder of manifests, as `serve --manifests` reads it.
    #[arg(long, env = "KUBE_IAP_MANIFESTS")]
    manifests: PathBuf,
    /// The signed-in user's email (verified). Without --user or --service-account the request
    /// carries no credentials.
    #[arg(long)]
    user: Option<String>,
    /// A group of the user (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A workload's service account, NAMESPACE/NAME.
    #[arg(long)]
    service_account: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The client's address.
    #[arg(long, default_value = "127.0.0.1")]
    from: std::net::IpAddr,
    /// When, RFC 3339 (default: now).
    #[arg(long)]
    at: Option<String>,
    /// The URL, e.g. https://wiki.example.com/docs/page.
    url: String,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// URL of the proxy's key set: https://HOST/_iap/jwks.json, or the admin port's /jwks.json.
    #[arg(long)]
    jwks: String,
    /// The audience the backend expects: /namespaces/NAMESPACE/iappolicies/NAME, or the
    /// policy's spec.signedHeaders.audience.
    #[arg(long)]
    audience: String,
    /// The issuer the proxy signs with (its --assertion-issuer).
    #[arg(long, default_value = kube_iap::proxy::DEFAULT_ASSERTION_ISSUER)]
    issuer: String,
    /// The assertion (the header's value).
    token: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Folder of *.yaml / *.yml manifests: IapPolicy, OAuthClient, Service, EndpointSlice, Secret,
    /// Ingress, and the Gateway API's GatewayClass, Gateway, HTTPRoute, GRPCRoute and
    /// ReferenceGrant.
    #[arg(long, env = "KUBE_IAP_MANIFESTS")]
    manifests: PathBuf,
    /// Plain HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KUBE_IAP_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// HTTPS listener; certificates come from the Secrets the policies name in spec.tls.
    #[arg(long, default_value = "127.0.0.1:8443", env = "KUBE_IAP_HTTPS_ADDR")]
    https_addr: SocketAddr,
    /// Disable the HTTPS listener.
    #[arg(long)]
    no_https: bool,
    /// Admin listener: /healthz, /readyz, /metrics, /status, /jwks.json.
    #[arg(long, default_value = "127.0.0.1:9090", env = "KUBE_IAP_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// How often the manifests folder is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    reload_interval_ms: u64,
    /// The Secret holding session keys, as NAMESPACE/NAME: one 32-byte key per data entry (raw or
    /// base64), the greatest entry name newest. Without it, keys are generated at start.
    #[arg(long, value_parser = parse_object_key, default_value = "default/kube-iap-session-keys")]
    session_keys_secret: ObjectKey,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "KUBE_IAP_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Plain HTTP listener.
    #[arg(long, default_value = "0.0.0.0:8080", env = "KUBE_IAP_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// HTTPS listener; certificates come from the Secrets the policies name in spec.tls.
    #[arg(long, default_value = "0.0.0.0:8443", env = "KUBE_IAP_HTTPS_ADDR")]
    https_addr: SocketAddr,
    /// Disable the HTTPS listener.
    #[arg(long)]
    no_https: bool,
    /// Admin listener: /healthz, /readyz, /metrics, /status, /jwks.json.
    #[arg(long, default_value = "0.0.0.0:9090", env = "KUBE_IAP_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// This replica's name, in the leader Lease and in Events (set from the downward API).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The controller's own namespace: the leader Lease and, by default, the key Secrets.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-iap")]
    pod_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "kube-iap-leader")]
    lease_name: String,
    /// Ingresses with this ingressClassName are served (the IngressClass's controller is
    /// kube-iap.io/ingress-controller).
    #[arg(long, default_value = "kube-iap")]
    ingress_class: String,
    /// Addresses (IPs or hostnames, comma-separated) written to served Ingresses'
    /// status.loadBalancer and Gateways' status.addresses: the proxy Service's external address.
    #[arg(long, value_delimiter = ',', env = "KUBE_IAP_INGRESS_ADDRESS")]
    ingress_address: Vec<String>,
    /// The port the proxy Service exposes for HTTP: Gateway listeners with protocol HTTP are
    /// served only on this port.
    #[arg(long, default_value_t = 80, env = "KUBE_IAP_GATEWAY_HTTP_PORT")]
    gateway_http_port: i32,
    /// The port the proxy Service exposes for HTTPS: Gateway listeners with protocol HTTPS are
    /// served only on this port.
    #[arg(long, default_value_t = 443, env = "KUBE_IAP_GATEWAY_HTTPS_PORT")]
    gateway_https_port: i32,
    /// The Secret holding session keys, as NAMESPACE/NAME (default:
    /// POD_NAMESPACE/kube-iap-session-keys; the signing keys are kube-iap-signing-keys next to it).
    #[arg(long, value_parser = parse_object_key)]
    session_keys_secret: Option<ObjectKey>,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// How the proxy treats requests, the same in local and cluster mode.
#[derive(clap::Args)]
struct ProxyArgs {
    /// Seconds allowed to connect to a backend.
    #[arg(long, default_value_t = 5)]
    connect_timeout_secs: u64,
    /// Seconds allowed for a backend to send its response headers.
    #[arg(long, default_value_t = 60)]
    response_timeout_secs: u64,
    /// Seconds allowed for one call to an identity provider (discovery, keys, token exchange).
    #[arg(long, default_value_t = 5)]
    idp_timeout_secs: u64,
    /// `iss` of the signed assertion (`x-kube-iap-jwt-assertion`) backends receive, e.g. this
    /// deployment's public URL.
    #[arg(long, default_value = kube_iap::proxy::DEFAULT_ASSERTION_ISSUER)]
    assertion_issuer: String,
    /// Load balancers in front of kube-iap whose X-Forwarded-For is believed for sourceCidrs
    /// conditions, comma-separated CIDRs. By default nothing is trusted: the peer address counts.
    #[arg(long, value_delimiter = ',', env = "KUBE_IAP_TRUSTED_PROXY_CIDRS")]
    trusted_proxy_cidrs: Vec<ipnet::IpNet>,
    /// Sign-in redirects and callbacks accepted per client address and minute (behind a load
    /// balancer, set --trusted-proxy-cidrs so clients are told apart).
    #[arg(long, default_value_t = 1200)]
    sign_in_per_minute: u32,
    /// Also send Google IAP's x-goog-authenticated-user-email/-id headers to every backend, as
    /// if every policy set googleCompatibleHeaders (for apps written against Google IAP).
    #[arg(long, env = "KUBE_IAP_GOOGLE_COMPATIBLE_HEADERS")]
    google_compatible_headers: bool,
    /// Worker threads serving connections, each with its own runtime and upstream pool
    /// (default: one per CPU).
    #[arg(long, env = "KUBE_IAP_WORKERS")]
    workers: Option<usize>,
    /// Write no access-log line per request.
    #[arg(long)]
    no_access_log: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "KUBE_IAP_LOG_FORMAT")]
    log_format: LogFormat,
}

impl ProxyArgs {
    fn config(&self) -> ProxyConfig {
        ProxyConfig {
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            response_timeout: Duration::from_secs(self.response_timeout_secs),
            access_log: !self.no_access_log,
            idp_timeout: Duration::from_secs(self.idp_timeout_secs.max(1)),
            assertion_issuer: self.assertion_issuer.clone(),
            trusted_proxies: self.trusted_proxy_cidrs.clone(),
            sign_in_per_minute: self.sign_in_per_minute.max(1),
            google_compatible_headers: self.google_compatible_headers,
            workers: self
                .workers
                .unwrap_or(ProxyConfig::default().workers)
                .max(1),
            ..ProxyConfig::default()
        }
    }
}

fn run_server(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let running = serve::start(config).await?;
        running.run_until_signal().await;
        Ok(())
    })
}

fn parse_object_key(text: &str) -> Result<ObjectKey, String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ObjectKey::new(namespace, name))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    kube_iap::allocator::disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", kube_iap::api::crds_yaml());
            Ok(())
        }
        Command::Explain(args) => {
            let at = match &args.at {
                Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|error| anyhow::anyhow!("--at {text:?}: {error}"))?
                    .timestamp(),
                None => chrono::Utc::now().timestamp(),
            };
            let answer = kube_iap::explain::explain(&kube_iap::explain::Question {
                manifests: args.manifests,
                url: args.url,
                user: args.user,
                groups: args.groups,
                service_account: args.service_account,
                method: args.method.to_ascii_uppercase(),
                from: args.from,
                at,
            })?;
            print!("{}", answer.report);
            Ok(())
        }
        Command::Tunnel(args) => {
            use kube_iap::tunnel_client::{self, TokenSource, TunnelOptions};
            let token = match (
                args.token_file,
                args.token_command,
                std::env::var("KUBE_IAP_TOKEN"),
            ) {
                (Some(path), _, _) => TokenSource::File(path),
                (None, Some(command), _) => TokenSource::Command(command),
                (None, None, Ok(token)) => TokenSource::Value(token),
                (None, None, Err(_)) => TokenSource::Cache(
                    args.token_cache
                        .unwrap_or_else(kube_iap::login_client::default_cache),
                ),
            };
            let options = TunnelOptions {
                url: args.url,
                port: args.port,
                token,
                ca_file: args.ca_file,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(async {
                match (args.stdio, args.listen) {
                    (true, _) => tunnel_client::stdio(options).await,
                    (false, Some(listen)) => tunnel_client::listen(options, listen).await,
                    (false, None) => Err(tunnel_client::TunnelError::Connect(
                        "pass --listen ADDR or --stdio".into(),
                    )),
                }
            });
            if let Err(error) = result {
                eprintln!("kube-iap tunnel: {error}");
                std::process::exit(match error {
                    tunnel_client::TunnelError::Closed { .. } => 3,
                    _ => 1,
                });
            }
            Ok(())
        }
        Command::Login(args) => {
            let cache = args
                .cache
                .unwrap_or_else(kube_iap::login_client::default_cache);
            let runtime = tokio::runtime::Runtime::new()?;
            let cached = runtime.block_on(kube_iap::login_client::login(
                kube_iap::login_client::LoginOptions {
                    issuer: args.issuer,
                    client_id: args.client_id,
                    client_secret: args.client_secret,
                    scopes: args.scopes,
                    cache: cache.clone(),
                    open_browser: !args.no_browser,
                    port: args.port,
                },
            ))?;
            eprintln!(
                "Signed in; the token is cached in {} until {} (Unix time).",
                cache.display(),
                cached.expires_at
            );
            Ok(())
        }
        Command::Token { cache } => {
            let cache = cache.unwrap_or_else(kube_iap::login_client::default_cache);
            let runtime = tokio::runtime::Runtime::new()?;
            match runtime.block_on(kube_iap::login_client::cached_token(&cache)) {
                Ok(token) => {
                    println!("{token}");
                    Ok(())
                }
                Err(reason) => {
                    eprintln!("kube-iap token: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "kube-iap",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Codes => {
            print!("{}", kube_iap::error_codes::troubleshooting_markdown());
            Ok(())
        }
        Command::VerifyAssertion(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let jwks = runtime
                .block_on(kube_iap::verify_assertion::fetch_jwks(&args.jwks))
                .map_err(|reason| anyhow::anyhow!("cannot fetch the key set: {reason}"))?;
            match kube_iap::verify_assertion::verify(
                &args.token,
                &jwks,
                &args.audience,
                &args.issuer,
            ) {
                Ok(claims) => {
                    println!("{}", serde_json::to_string_pretty(&claims)?);
                    Ok(())
                }
                Err(reason) => {
                    eprintln!("invalid assertion: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Command::Serve(args) => {
            telemetry::init(args.proxy.log_format);
            run_server(ServeConfig {
                source: serve::Source::Folder {
                    dir: args.manifests,
                    reload_interval: Duration::from_millis(args.reload_interval_ms.max(50)),
                },
                http_addr: Some(args.http_addr),
                https_addr: (!args.no_https).then_some(args.https_addr),
                admin_addr: args.admin_addr,
                session_keys_secret: Some(args.session_keys_secret),
                proxy: args.proxy.config(),
            })
        }
        Command::Controller(args) => {
            telemetry::init(args.proxy.log_format);
            let identity = args.pod_name.unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kube-iap".into());
                format!("{host}-{}", std::process::id())
            });
            let session_keys_secret = args.session_keys_secret.unwrap_or_else(|| {
                ObjectKey::new(
                    &args.pod_namespace,
                    kube_iap::index::DEFAULT_SESSION_KEYS_SECRET,
                )
            });
            let runtime = tokio::runtime::Runtime::new()?;
            // The client's background worker lives on the runtime that creates it, so it is
            // created on the one that serves. In a Pod: the service account; elsewhere:
            // KUBECONFIG or ~/.kube/config.
            let client = runtime
                .block_on(kube::Client::try_default())
                .map_err(|error| {
                    anyhow::anyhow!("cannot configure a Kubernetes client: {error}")
                })?;
            let config = ServeConfig {
                source: serve::Source::Cluster(Box::new(ClusterConfig {
                    client,
                    watch_namespace: args.namespace,
                    lease_namespace: args.pod_namespace,
                    lease_name: args.lease_name,
                    identity,
                    ingress_class: args.ingress_class,
                    ingress_addresses: args.ingress_address,
                    gateway_ports: (args.gateway_http_port, args.gateway_https_port),
                    discovery_interval: kube_iap::source::RECHECK_INTERVAL,
                })),
                http_addr: Some(args.http_addr),
                https_addr: (!args.no_https).then_some(args.https_addr),
                admin_addr: args.admin_addr,
                session_keys_secret: Some(session_keys_secret),
                proxy: args.proxy.config(),
            };
            runtime.block_on(async {
                let running = serve::start(config).await?;
                running.run_until_signal().await;
                Ok(())
            })
        }
    }
}
