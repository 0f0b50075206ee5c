//! TLS over a tracked TCP stream (feature `rustls`).

use tokio_rustls::TlsConnector;

use crate::error::BoxError;
use crate::http::connect::socket::TrackedTcp;
use crate::http::connect::stream::Conn;

/// Runs the TLS handshake for `server_name` (a DNS name or a bare IP) over `tcp`.
pub(super) async fn handshake(
    tls: Option<TlsConnector>,
    server_name: String,
    tcp: TrackedTcp,
) -> Result<Conn, BoxError> {
    let tls = tls.ok_or_else(|| {
        BoxError::from(
            "https is unavailable: the TLS configuration could not be built when the manager \
             was created (build it with HttpClientManager::builder() to see why)",
        )
    })?;
    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| BoxError::from(format!("invalid TLS server name {server_name:?}: {e}")))?;
    let stream = tls.connect(name, tcp).await?;
    Ok(Conn::Tls(Box::new(stream)))
}
