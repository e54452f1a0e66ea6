use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache = "user"]
struct User;

fn main() {}
