use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "user", collection = "users", id = i64, ttl = 60)]
struct User;

fn main() {}
