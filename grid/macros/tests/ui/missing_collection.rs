use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "user", id = i64)]
struct User;

fn main() {}
