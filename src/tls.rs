//! Optional HTTPS on the Ollama port (`server.tls`), for clients such as Home Assistant
//! that want https. Each connection's handshake runs in its own task (see
//! [`crate::http1::serve`]), never in the accept loop, and a client that stalls its
//! handshake is dropped after a timeout so it cannot hold a connection slot for long.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the PEM certificate chain and private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert: cannot read {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert: no certificate in {}", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("server.tls.key: cannot read {}: {e}", key.display()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| format!("server.tls: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completes the TLS handshake on an accepted connection, in that connection's own
/// task: a client that never sends its ClientHello holds up only itself, and only
/// until the timeout. `None` when the handshake failed or timed out (logged).
pub async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream, client: SocketAddr) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(client = %client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client = %client, "TLS handshake timed out");
            None
        }
    }
}
