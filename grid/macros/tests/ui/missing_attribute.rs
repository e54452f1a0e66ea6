use hydracache_macros::HydraCacheEntity;

#[derive(HydraCacheEntity)]
struct User {
    id: i64,
}

fn main() {}
