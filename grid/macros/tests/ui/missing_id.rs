use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "user", collection = "users")]
struct User;

fn main() {}
