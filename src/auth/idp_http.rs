//! The HTTP client kube-iap uses to talk to identity providers (discovery, keys, token exchange).
//! Every call is bounded: a connect timeout, a total deadline, and a cap on the response size, so
//! a slow or hostile provider can delay one sign-in but never hang a worker or exhaust memory.
//! Redirects are not followed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Discovery documents and key sets are a few KiB; anything near this is not an OpenID provider.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    #[error("the identity provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the identity provider: {0}")]
    Connect(String),
    #[error(
        "the identity provider's response is larger than {MAX_RESPONSE_BYTES} bytes or broken: {0}"
    )]
    Body(String),
}

/// A pooled HTTPS (and HTTP, for providers on the cluster network) client.
#[derive(Clone)]
pub struct IdpHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    deadline: Duration,
}

impl IdpHttp {
    /// A client that trusts the system's certificate authorities.
    pub fn new(connect_timeout: Duration, deadline: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = match HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system certificate authorities: HTTPS identity providers cannot be verified");
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        IdpHttp { client, deadline }
    }

    /// Sends one request; the answer is whatever status the provider gave.
    pub async fn call(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, IdpHttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| IdpHttpError::Connect(super::providers::describe(&error)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| IdpHttpError::Body(error.to_string()))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| IdpHttpError::Timeout(self.deadline))?
    }
}

/// So openidconnect's discovery, key-set and token requests go through this client directly.
impl<'c> openidconnect::AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<http::Response<Vec<u8>>, IdpHttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(IdpHttp::call(self, request))
    }
}
