//! Segmented cache keys that cannot collide.

use std::fmt::Display;

/// Separator between key segments.
pub const KEY_SEPARATOR: char = ':';

/// Builds a key from segments, escaping the separator (and the escape
/// character) inside segments so that one segment containing `:` can never
/// produce the same key as two segments.
///
/// ```
/// use hydracache::CacheKeyBuilder;
///
/// let key = CacheKeyBuilder::new().tenant(7).entity("user", 42).build_string();
/// assert_eq!(key, "tenant:7:user:42");
/// let tricky = CacheKeyBuilder::new().segment("a:b").build_string();
/// let two = CacheKeyBuilder::new().segment("a").segment("b").build_string();
/// assert_ne!(tricky, two);
/// assert_eq!(tricky, r"a\:b");
/// ```
#[derive(Clone, Debug, Default)]
pub struct CacheKeyBuilder {
    key: String,
    segments: usize,
}

impl CacheKeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the tenant, labelled: `tenant:<tenant>`.
    pub fn tenant(self, tenant: impl Display) -> Self {
        self.segment("tenant").segment(tenant.to_string())
    }

    /// Appends an entity and its id: `<entity>:<id>` (e.g. `user:42`).
    pub fn entity(self, entity: impl Display, id: impl Display) -> Self {
        self.segment(entity.to_string()).segment(id.to_string())
    }

    /// Appends a segment, escaping `\` and `:` inside it.
    pub fn segment(mut self, segment: impl AsRef<str>) -> Self {
        if self.segments > 0 {
            self.key.push(KEY_SEPARATOR);
        }
        for c in segment.as_ref().chars() {
            if c == '\\' || c == KEY_SEPARATOR {
                self.key.push('\\');
            }
            self.key.push(c);
        }
        self.segments += 1;
        self
    }

    /// The key.
    pub fn build_string(self) -> String {
        self.key
    }
}
