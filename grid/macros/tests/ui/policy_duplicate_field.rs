fn main() {
    let _ = hydracache_macros::query_cache_policy!(name = "load-user", ttl_secs = 60, ttl = std::time::Duration::from_secs(5));
}
