//! The NOTIFY payload format: which tags and keys a database write makes stale.

use crate::db::invalidations::InvalidationSet;

/// The payload of a NOTIFY that [`crate::db::PgInvalidationListener`] turns
/// into invalidations: a JSON object with any of
///
/// - `"tags"`: tags to invalidate, e.g. `["user:42", "users"]`;
/// - `"keys"`: keys to invalidate, relative to the listener's
///   [`crate::db::DbCache`] namespace, e.g. `["user:42"]`;
/// - `"flush"`: `true` to flush the listening cache's namespace ([`crate::db::DbCache::flush`]).
///
/// Other fields are refused (a payload the listener does not fully
/// understand is treated like a missed notification), as is anything that
/// is not such an object. Postgres limits a payload to 8000 bytes.
///
/// ```
/// use hydracache::db::NotifyPayload;
///
/// let p = NotifyPayload::parse(r#"{"tags":["user:42","users"]}"#).unwrap();
/// assert_eq!(p.tags, ["user:42", "users"]);
/// assert!(p.keys.is_empty() && !p.flush);
///
/// let json = NotifyPayload::new().tag("users").key("stats").to_json();
/// assert_eq!(json, r#"{"tags":["users"],"keys":["stats"]}"#);
///
/// let err = NotifyPayload::parse("user:42").unwrap_err();
/// assert!(std::error::Error::source(&err).is_some()); // the JSON parser's own error
/// assert!(NotifyPayload::parse(r#"{"tag":"users"}"#).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyPayload {
    /// Tags to invalidate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Keys to invalidate (relative to the cache's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Flush the namespace of the cache that applies it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flush: bool,
}

/// A NOTIFY payload that is not in the [`NotifyPayload`] format.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
#[error("invalid invalidation payload {payload:?}: {source} (expected JSON like {{\"tags\":[\"user:42\"],\"keys\":[\"user:42\"]}})")]
pub struct PayloadError {
    /// The payload (its first 200 characters).
    pub payload: String,
    /// What is wrong with it: the JSON parser's error (a `serde_json::Error`).
    pub source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl NotifyPayload {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a key (relative to the cache's namespace).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Asks for a flush.
    pub fn flush(mut self) -> Self {
        self.flush = true;
        self
    }

    /// Parses a payload.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        serde_json::from_str(payload).map_err(|e| PayloadError {
            payload: payload.chars().take(200).collect(),
            source: std::sync::Arc::new(e),
        })
    }

    /// The payload as JSON, for `pg_notify(channel, payload)`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payload of strings always serializes")
    }

    /// What the payload invalidates.
    ///
    /// ```
    /// let p = hydracache::db::NotifyPayload::new().tag("users").key("user:1");
    /// let set = p.invalidations();
    /// assert_eq!(set.keys(), ["user:1"]);
    /// assert_eq!(set.tag_set().iter().collect::<Vec<_>>(), ["users"]);
    /// ```
    pub fn invalidations(&self) -> InvalidationSet {
        let mut set = InvalidationSet::new().tags(self.tags.iter().cloned());
        for k in &self.keys {
            set.add_key(k.clone());
        }
        if self.flush {
            set = set.flush();
        }
        set
    }
}

impl From<&InvalidationSet> for NotifyPayload {
    fn from(set: &InvalidationSet) -> Self {
        NotifyPayload {
            tags: set.tag_set().iter().map(str::to_string).collect(),
            keys: set.keys().to_vec(),
            flush: set.is_flush(),
        }
    }
}
