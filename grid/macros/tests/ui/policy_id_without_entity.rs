fn main() {
    let _ = hydracache_macros::query_cache_policy!(name = "load-user", id = 42);
}
