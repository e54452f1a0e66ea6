use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(collection = "users", id = i64)]
struct User;

fn main() {}
