//! Runnable HydraCache programs live in this package's examples: `cargo run --example quickstart`.
//! This library holds the little they share.
#![deny(missing_docs)]

/// Serves `router` (an actuator) on an ephemeral loopback port in the
/// background and returns its URL. Loopback because the examples set no
/// bearer token: see docs/operations.md.
#[cfg(feature = "actuator")]
pub async fn serve_on_loopback(router: axum::Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}
