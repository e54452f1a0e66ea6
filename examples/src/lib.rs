//! Runnable HydraCache programs live in this package's examples: `cargo run --example quickstart`.
