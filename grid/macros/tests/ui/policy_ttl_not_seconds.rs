fn main() {
    let _ = hydracache_macros::query_cache_policy!(name = "load-user", key = "u:42", ttl_secs = "60");
}
