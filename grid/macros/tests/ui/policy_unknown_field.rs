fn main() {
    let _ = hydracache_macros::query_cache_policy!(name = "load-user", entity = "user", ttl_minutes = 1);
}
