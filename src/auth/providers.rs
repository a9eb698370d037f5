//! What kube-iap knows about each identity provider: its discovery document and signing keys,
//! fetched once, kept fresh in the background, and kept even while the provider is down, so
//! existing sessions and cached keys keep working through an outage. Problems (discovery fails,
//! the provider rejects a client) are remembered per OAuthClient for its status: error code 11.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use openidconnect::core::CoreJsonWebKey;
use openidconnect::{IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, ProviderMetadataWithLogout};

use super::idp_http::IdpHttp;
use crate::model::{OidcClient, RoutingTable};

/// Discovery document plus the key set it points at.
pub type Metadata = ProviderMetadataWithLogout;

/// How often a healthy provider's document and keys are fetched again.
const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// After a failure, callers get the failure instead of a new attempt for this long, so a
/// provider that is down is not hammered by every browser that wants to sign in.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// A token naming an unknown key triggers at most one key refresh per this interval (unless
/// configured otherwise): a stream of made-up key ids cannot turn into a stream of fetches.
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The background retry delay grows to this after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What was fetched from one key source.
pub struct Discovered {
    /// The discovery document; `None` for a source that only publishes keys.
    metadata: Option<Metadata>,
    keys: JsonWebKeySet<CoreJsonWebKey>,
    pub fetched_at: Instant,
}

impl Discovered {
    /// The discovery document of a source fetched by [`Providers::metadata`].
    pub fn document(&self) -> &Metadata {
        self.metadata
            .as_ref()
            .expect("sources looked up by issuer are discovered, so they have a document")
    }

    pub fn keys(&self) -> &JsonWebKeySet<CoreJsonWebKey> {
        &self.keys
    }
}

/// Where a provider's keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery(String),
    /// A key set URL on its own (e.g. a cluster's service-account issuer).
    Jwks(String),
}

impl KeySource {
    pub fn for_issuer(issuer: &str, jwks_uri: Option<&str>) -> KeySource {
        match jwks_uri {
            Some(uri) => KeySource::Jwks(uri.to_string()),
            None => KeySource::Discovery(issuer.to_string()),
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Discovery(issuer) => f.write_str(issuer),
            KeySource::Jwks(uri) => write!(f, "key set {uri}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fetching the keys of {origin} failed: {detail}")]
pub struct DiscoveryFailed {
    pub origin: String,
    pub detail: String,
}

#[derive(Default)]
struct Failures {
    last: Option<(Instant, String)>,
    in_a_row: u32,
}

struct Provider {
    source: KeySource,
    current: ArcSwapOption<Discovered>,
    failures: Mutex<Failures>,
    /// One fetch at a time per provider; waiters reuse its result.
    fetching: tokio::sync::Mutex<()>,
}

pub struct Providers {
    http: IdpHttp,
    /// At most one key refresh per provider per this interval for unknown key ids.
    key_refresh_interval: Duration,
    by_source: Mutex<HashMap<KeySource, Arc<Provider>>>,
    /// OAuthClient name → why the provider rejected it (e.g. `invalid_client`).
    rejected: Mutex<HashMap<String, String>>,
}

impl Providers {
    pub fn new(http: IdpHttp, key_refresh_interval: Duration) -> Arc<Self> {
        Arc::new(Providers {
            http,
            key_refresh_interval,
            by_source: Mutex::default(),
            rejected: Mutex::default(),
        })
    }

    pub fn http(&self) -> &IdpHttp {
        &self.http
    }

    /// The provider's metadata: the cached copy (even a stale one), else a discovery now.
    pub async fn metadata(&self, issuer: &str) -> Result<Arc<Discovered>, DiscoveryFailed> {
        self.keys(&KeySource::Discovery(issuer.to_string())).await
    }

    /// The keys (and document, if any) of `source`: cached, else fetched now.
    pub async fn keys(&self, source: &KeySource) -> Result<Arc<Discovered>, DiscoveryFailed> {
        let provider = self.provider(source);
        if let Some(found) = provider.current.load_full() {
            return Ok(found);
        }
        self.fetch(&provider, None).await
    }

    /// Fetches the keys again because a token names a key the cached set lacks. Rate-limited:
    /// within the key refresh interval of the last fetch, the cached copy is final.
    pub async fn refresh_keys(
        &self,
        source: &KeySource,
    ) -> Result<Arc<Discovered>, DiscoveryFailed> {
        let provider = self.provider(source);
        self.fetch(&provider, Some(self.key_refresh_interval)).await
    }

    /// Records that the provider refused `client`'s credentials.
    pub fn client_rejected(&self, client: &str, detail: String) {
        self.rejected
            .lock()
            .expect("rejections lock is never poisoned")
            .insert(client.to_string(), detail);
    }

    /// Records that the provider accepted `client`'s credentials.
    pub fn client_accepted(&self, client: &str) {
        self.rejected
            .lock()
            .expect("rejections lock is never poisoned")
            .remove(client);
    }

    /// What is wrong with `client` at its provider right now, if anything: the latest discovery
    /// failed, or the provider rejected the client's credentials.
    pub fn problem(&self, client: &OidcClient) -> Option<String> {
        if let Some(detail) = self
            .rejected
            .lock()
            .expect("rejections lock is never poisoned")
            .get(&client.name)
        {
            return Some(detail.clone());
        }
        client_sources(client).find_map(|source| self.source_problem(&source))
    }

    /// The authorization, token and key endpoints `issuer`'s discovery named, once discovered.
    pub fn endpoints(&self, issuer: &str) -> Option<(String, Option<String>, String)> {
        let provider = self
            .by_source
            .lock()
            .expect("providers lock is never poisoned")
            .get(&KeySource::Discovery(issuer.to_string()))
            .cloned()?;
        let discovered = provider.current.load_full()?;
        let document = discovered.metadata.as_ref()?;
        Some((
            document.authorization_endpoint().to_string(),
            document.token_endpoint().map(ToString::to_string),
            document.jwks_uri().to_string(),
        ))
    }

    fn source_problem(&self, source: &KeySource) -> Option<String> {
        let provider = self
            .by_source
            .lock()
            .expect("providers lock is never poisoned")
            .get(source)
            .cloned()?;
        let failures = provider.failures.lock().expect("never poisoned");
        let (failed_at, detail) = failures.last.as_ref()?;
        let fetched_at = provider.current.load().as_ref().map(|d| d.fetched_at);
        match fetched_at {
            Some(fetched_at) if fetched_at > *failed_at => None,
            Some(_) => Some(format!(
                "{detail} (sign-ins keep using the provider's last known keys)"
            )),
            None => Some(detail.clone()),
        }
    }

    /// Keeps every provider the table names fresh until `stop` fires: discovered at start,
    /// refreshed every [`REFRESH_EVERY`], retried with backoff while failing.
    pub async fn keep_fresh(
        self: Arc<Self>,
        table: Arc<arc_swap::ArcSwap<RoutingTable>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<Arc<RoutingTable>> = None;
        let mut sources: Vec<KeySource> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::shutdown::until_stopped(&mut stop) => return,
            }
            let current = table.load_full();
            if !seen
                .as_ref()
                .is_some_and(|seen| Arc::ptr_eq(seen, &current))
            {
                sources = sources_of(&current);
                self.forget_all_but(&sources);
                seen = Some(current);
            }
            for source in &sources {
                let provider = self.provider(source);
                if provider.due(Instant::now()) && provider.fetching.try_lock().is_ok() {
                    let providers = self.clone();
                    tokio::spawn(async move {
                        let _ = providers.fetch(&provider, Some(Duration::ZERO)).await;
                    });
                }
            }
        }
    }

    fn provider(&self, source: &KeySource) -> Arc<Provider> {
        self.by_source
            .lock()
            .expect("providers lock is never poisoned")
            .entry(source.clone())
            .or_insert_with(|| {
                Arc::new(Provider {
                    source: source.clone(),
                    current: ArcSwapOption::empty(),
                    failures: Mutex::default(),
                    fetching: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    fn forget_all_but(&self, sources: &[KeySource]) {
        self.by_source
            .lock()
            .expect("providers lock is never poisoned")
            .retain(|source, _| sources.contains(source));
    }

    /// Fetches unless a fetch finished less than `fresh_enough` ago (`None`: any cached copy
    /// will do). Concurrent callers wait for the one fetch in flight.
    async fn fetch(
        &self,
        provider: &Provider,
        fresh_enough: Option<Duration>,
    ) -> Result<Arc<Discovered>, DiscoveryFailed> {
        let _fetching = provider.fetching.lock().await;
        if let Some(current) = provider.current.load_full() {
            match fresh_enough {
                None => return Ok(current),
                Some(age) if current.fetched_at.elapsed() < age => return Ok(current),
                Some(_) => {}
            }
        }
        if fresh_enough.is_none() {
            let failures = provider.failures.lock().expect("never poisoned");
            if let Some((at, detail)) = &failures.last {
                if at.elapsed() < RETRY_AFTER_FAILURE {
                    return Err(provider.failed(detail.clone()));
                }
            }
        }
        let result = match &provider.source {
            KeySource::Discovery(issuer) => match IssuerUrl::new(issuer.clone()) {
                Ok(issuer) => Metadata::discover_async(issuer, &self.http)
                    .await
                    .map(|metadata| (metadata.jwks().clone(), Some(metadata)))
                    .map_err(|error| describe(&error)),
                Err(error) => Err(format!("the issuer is not a URL: {error}")),
            },
            KeySource::Jwks(uri) => match JsonWebKeySetUrl::new(uri.clone()) {
                Ok(url) => JsonWebKeySet::fetch_async(&url, &self.http)
                    .await
                    .map(|keys| (keys, None))
                    .map_err(|error| describe(&error)),
                Err(error) => Err(format!("the key set URL is not a URL: {error}")),
            },
        };
        match result {
            Ok((keys, metadata)) => {
                let discovered = Arc::new(Discovered {
                    metadata,
                    keys,
                    fetched_at: Instant::now(),
                });
                provider.current.store(Some(discovered.clone()));
                *provider.failures.lock().expect("never poisoned") = Failures::default();
                tracing::info!(source = %provider.source, "identity provider keys fetched");
                Ok(discovered)
            }
            Err(detail) => {
                tracing::warn!(source = %provider.source, error = %detail, "identity provider keys could not be fetched");
                let mut failures = provider.failures.lock().expect("never poisoned");
                failures.last = Some((Instant::now(), detail.clone()));
                failures.in_a_row = failures.in_a_row.saturating_add(1);
                match provider.current.load_full() {
                    // Keys outlive their refresh while the provider is down.
                    Some(stale) if fresh_enough.is_some() => Ok(stale),
                    _ => Err(provider.failed(detail)),
                }
            }
        }
    }
}

impl Provider {
    fn failed(&self, detail: String) -> DiscoveryFailed {
        DiscoveryFailed {
            origin: self.source.to_string(),
            detail,
        }
    }

    /// Whether the background refresher should fetch now.
    fn due(&self, now: Instant) -> bool {
        let failures = self.failures.lock().expect("never poisoned");
        if let Some((at, _)) = &failures.last {
            let backoff = Duration::from_secs(1 << failures.in_a_row.min(6)).min(MAX_BACKOFF);
            return now.duration_since(*at) >= backoff;
        }
        match self.current.load().as_ref() {
            Some(current) => now.duration_since(current.fetched_at) >= REFRESH_EVERY,
            None => true,
        }
    }
}

/// Every key source a client relies on: its own issuer, then its trusted workload issuers.
fn client_sources(client: &OidcClient) -> impl Iterator<Item = KeySource> + '_ {
    std::iter::once(KeySource::Discovery(client.issuer.clone())).chain(
        client
            .trusted_issuers
            .iter()
            .map(|trusted| KeySource::for_issuer(&trusted.issuer, trusted.jwks_uri.as_deref())),
    )
}

fn sources_of(table: &RoutingTable) -> Vec<KeySource> {
    let mut sources: Vec<KeySource> = Vec::new();
    let mut seen_clients = std::collections::HashSet::new();
    for sign_in in table.routes().filter_map(|route| route.sign_in.as_ref()) {
        if seen_clients.insert(Arc::as_ptr(&sign_in.client)) {
            for source in client_sources(&sign_in.client) {
                if !sources.contains(&source) {
                    sources.push(source);
                }
            }
        }
    }
    sources
}

/// A failed token request on one line, for status messages and logs. A token response that does
/// not parse is named only by where it broke: serde's message quotes the offending value, and in a
/// token response the values are tokens.
pub fn describe_token_error<RE, T>(error: &openidconnect::RequestTokenError<RE, T>) -> String
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match error {
        openidconnect::RequestTokenError::Parse(parse, _body) => format!(
            "the provider's token response is malformed at `{}` (line {}, column {})",
            parse.path(),
            parse.inner().line(),
            parse.inner().column()
        ),
        other => describe(other),
    }
}

/// An error and its causes on one line, for status messages and logs.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use openidconnect::core::CoreTokenResponse;

    type TokenError = openidconnect::RequestTokenError<
        std::io::Error,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >;

    #[test]
    fn a_malformed_token_response_is_described_without_its_values() {
        // `expires_in` must be a number; serde's own message quotes the wrongly typed value.
        let body = br#"{"access_token":"secret-access-token","token_type":"bearer","expires_in":"secret-in-wrong-place"}"#;
        let parse = serde_path_to_error::deserialize::<_, CoreTokenResponse>(
            &mut serde_json::Deserializer::from_slice(body),
        )
        .expect_err("the body does not parse");
        assert!(
            describe(&parse).contains("secret"),
            "the test needs a parse error that quotes a value"
        );
        let error: TokenError = openidconnect::RequestTokenError::Parse(parse, body.to_vec());
        let described = describe_token_error(&error);
        assert!(!described.contains("secret"), "{described}");
        assert!(described.contains("expires_in"), "{described}");
    }
}
