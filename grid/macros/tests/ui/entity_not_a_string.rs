use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = user, collection = "users", id = i64)]
struct User;

fn main() {}
