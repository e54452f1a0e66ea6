//! `CacheEntity`: what a row type tells the cache about itself.

use std::fmt::Display;

use crate::key::KEY_SEPARATOR;

/// Cache metadata of an entity type: its name (the first part of its keys
/// and tags), the tag of its collection, and its id type.
///
/// One entity with id `42` is cached under key `user:42` with tag `user:42`
/// ([`CacheEntity::cache_key`], [`CacheEntity::cache_tag`]); queries that
/// return many of them (lists, searches, counts) are tagged with the
/// collection tag `users`. A write to user 42 invalidates both
/// ([`crate::db::DbCache::invalidate_entity`]).
///
/// Derive it with `#[derive(HydraCacheEntity)]`:
///
/// ```
/// use hydracache::db::{CacheEntity, HydraCacheEntity};
///
/// #[derive(HydraCacheEntity)]
/// #[hydracache(entity = "user", collection = "users", id = i64)]
/// struct User {
///     id: i64,
///     name: String,
/// }
///
/// assert_eq!(User::ENTITY, "user");
/// assert_eq!(User::cache_key(&42), "user:42");
/// assert_eq!(User::cache_tag(&42), "user:42");
/// assert_eq!(User::collection_tag().as_deref(), Some("users"));
/// ```
///
/// `collection` is optional: an entity without one has no collection tag.
///
/// or implement `Id` and `ENTITY` (and `COLLECTION`) by hand. The provided helpers define the
/// key and tag format that descriptors, policies, transactions and NOTIFY
/// payloads agree on; leave them as they are.
pub trait CacheEntity {
    /// The id type: it is formatted into keys and tags with `Display`.
    type Id: Display;
    /// The entity name, e.g. `"user"`: non-empty, no `:`, no whitespace.
    const ENTITY: &'static str;
    /// The collection tag, e.g. `Some("users")`, carried by queries over
    /// many rows; `None` if the entity has none.
    const COLLECTION: Option<&'static str> = None;

    /// The key of one entity: `ENTITY:id` (relative to the [`crate::db::DbCache`]'s namespace).
    fn cache_key(id: &Self::Id) -> String {
        entity_key(Self::ENTITY, id)
    }

    /// The tag of one entity: `ENTITY:id`.
    fn cache_tag(id: &Self::Id) -> String {
        entity_key(Self::ENTITY, id)
    }

    /// The collection tag, if the entity has one.
    fn collection_tag() -> Option<String> {
        Self::COLLECTION.map(str::to_string)
    }
}

/// `entity:id`, the key and tag of one entity.
pub(crate) fn entity_key(entity: &str, id: &dyn Display) -> String {
    format!("{entity}{KEY_SEPARATOR}{id}")
}
