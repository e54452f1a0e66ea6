//! Segmented cache keys that cannot collide.

/// Separator between key segments.
pub const KEY_SEPARATOR: char = ':';

/// Builds a key from segments, escaping the separator (and the escape
/// character) inside segments so that one segment containing `:` can never
/// produce the same key as two segments.
///
/// ```
/// use hydracache::CacheKeyBuilder;
///
/// let key = CacheKeyBuilder::new().tenant("acme").entity("user").segment("42").build();
/// assert_eq!(key, "acme:user:42");
/// let tricky = CacheKeyBuilder::new().segment("a:b").build();
/// let two = CacheKeyBuilder::new().segment("a").segment("b").build();
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

    /// Appends the tenant segment.
    pub fn tenant(self, tenant: impl AsRef<str>) -> Self {
        self.segment(tenant)
    }

    /// Appends the entity (type) segment.
    pub fn entity(self, entity: impl AsRef<str>) -> Self {
        self.segment(entity)
    }

    /// Appends an id or any other segment (anything `Display`).
    pub fn id(self, id: impl std::fmt::Display) -> Self {
        self.segment(id.to_string())
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
    pub fn build(self) -> String {
        self.key
    }
}
