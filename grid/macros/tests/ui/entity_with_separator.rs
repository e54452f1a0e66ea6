use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "app:user", collection = "users", id = i64)]
struct User;

fn main() {}
