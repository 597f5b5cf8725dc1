//! HTTPS: certificates chosen by SNI from the live route table, ALPN `h2` and `http/1.1`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

use super::table::Routes;
pub(crate) use crate::api::tls::load_certified_key;
use crate::api::tls::provider;

/// Picks the certificate of the SNI name from the current table; no name or no
/// certificate for it ends the handshake.
#[derive(Debug)]
struct SniResolver {
    routes: Arc<ArcSwap<Routes>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.routes.load().certs.get(&name).cloned()
    }
}

/// The rustls configuration of the HTTPS listener.
pub(crate) fn server_config(routes: Arc<ArcSwap<Routes>>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { routes }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
