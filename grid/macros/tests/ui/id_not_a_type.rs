use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "user", collection = "users", id = 42)]
struct User;

fn main() {}
