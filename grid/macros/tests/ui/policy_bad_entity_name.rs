fn main() {
    let _ = hydracache_macros::query_cache_policy!(name = "load-user", entity = "user id", id = 42);
}
