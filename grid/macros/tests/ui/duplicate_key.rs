use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
#[hydracache(entity = "user", collection = "users", id = i64)]
#[hydracache(entity = "member")]
struct User;

fn main() {}
