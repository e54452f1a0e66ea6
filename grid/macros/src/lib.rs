//! Procedural macros for HydraCache's database result cache.
//!
//! Use them through the `hydracache` crate (feature `sqlx`), which re-exports
//! them as `hydracache::db::HydraCacheEntity` and
//! `hydracache::db::query_cache_policy!`; the code they generate names
//! `::hydracache::db` items.
//!
//! - `#[derive(HydraCacheEntity)]` implements `hydracache::db::CacheEntity`
//!   from `#[hydracache(entity = "user", collection = "users", id = i64)]`.
//! - `query_cache_policy!(name = "load-user", entity = "user", id = 42,
//!   tag = "users", ttl_secs = 60)` builds a `hydracache::db::QueryCachePolicy`,
//!   checking its fields at compile time.
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod entity;
mod names;
mod policy;

/// Implements `hydracache::db::CacheEntity` for a type from its
/// `#[hydracache(...)]` attribute.
///
/// ```text
/// #[derive(HydraCacheEntity)]
/// #[hydracache(entity = "user", collection = "users", id = i64)]
/// struct User { id: i64, name: String }
///
/// // User::ENTITY == "user", User::COLLECTION == Some("users"),
/// // User::cache_key(&42) == "user:42", User::cache_tag(&42) == "user:42"
/// ```
///
/// `entity` and `id` are required, `collection` is optional (without it the
/// entity has no collection tag): `entity` and `collection` are string
/// literals (non-empty, no `:` and no whitespace, since they become parts of
/// keys and tags), `id` is the id's type (it must implement `Display`).
#[proc_macro_derive(HydraCacheEntity, attributes(hydracache))]
pub fn derive_hydracache_entity(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    entity::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Builds a `hydracache::db::QueryCachePolicy` from named fields.
///
/// ```text
/// let policy = query_cache_policy!(
///     name = "load-user",   // required: the diagnostic label
///     entity = "user",      // an entity name, or a type that implements CacheEntity
///     id = user_id,         // optional: without it the policy is a template (`.id(..)` later)
///     tag = "users",        // repeatable
///     ttl_secs = 60,        // or ttl = Duration::from_secs(60)
///     negative_ttl_secs = 5 // TTL of cached "no row" results
/// );
/// ```
///
/// Fields: `name` (required), `key` (an explicit key, exclusive with
/// `entity`), `entity`, `id` (needs `entity`), `tag` and `collection_tag`
/// (both repeatable), `ttl_secs` or `ttl`, `negative_ttl_secs` or
/// `negative_ttl`. Unknown, repeated or conflicting fields are compile errors.
#[proc_macro]
pub fn query_cache_policy(input: TokenStream) -> TokenStream {
    policy::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
