fn main() {
    let _ = hydracache_macros::query_cache_policy!(entity = "user", id = 42, ttl_secs = 60);
}
