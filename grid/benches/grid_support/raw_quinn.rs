//! The reference the grid's network path is measured against: a raw quinn
//! request/response on 127.0.0.1 with the grid's TLS stack (rustls, ring,
//! TLS 1.3, a certificate from the development CA): the client opens a
//! bidirectional stream, writes the request and finishes; the server echoes
//! it back and finishes.

use std::sync::Arc;

use hydracache::cluster::{DevCa, ALPN, SERVER_NAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The largest request the echo server reads.
const MAX: usize = 64 << 10;

/// Starts an echo server on 127.0.0.1 (on the current Tokio runtime) and
/// returns a client connection to it.
pub async fn echo_connection(ca: &DevCa) -> quinn::Connection {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = ca.issue_pem("raw").unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem.cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap(),
    ));
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap(),
    ));
    let server_ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server_ep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = server_ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(data) = recv.read_to_end(MAX).await else {
                            return;
                        };
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_ep
        .connect_with(client, addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

/// One request/response of `payload` on a fresh stream of `conn`.
pub async fn round_trip(conn: &quinn::Connection, payload: &[u8]) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(payload).await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(MAX).await.unwrap();
    assert_eq!(back.len(), payload.len());
}
