//! TLS termination: the certificate is chosen by SNI from the current routing table, so a new or
//! rotated Secret is served on the next handshake without a restart.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::SharedTable;

#[derive(Debug)]
struct SniResolver {
    table: SharedTable,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.table.load().certificates.get(name)
    }
}

/// The TLS server configuration: ring as the one crypto provider, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(table: SharedTable) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { table }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
