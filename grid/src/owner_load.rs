//! Named owner loaders, as a caller sees them: a call names a loader the
//! key's owner registered at build time and passes it argument bytes; the
//! owner runs it once for every concurrent caller in the grid, stores the
//! result and answers with the stored bytes, which the caller keeps as a
//! near copy. Nothing but the name and the bytes travels: no closure, no
//! code. For nodes that cannot reach the data source themselves (clients
//! without database credentials).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::codec::{CacheValue, Codec};
use crate::error::CacheError;
use crate::grid::Grid;
use crate::options::CacheOptions;

/// A call of a named owner loader: the name it is registered under on the
/// members and the arguments, as bytes the loader decodes itself.
///
/// ```
/// use hydracache::OwnerLoad;
/// let call = OwnerLoad::new("users.by-id").arg(42u64.to_le_bytes());
/// assert_eq!((call.loader(), call.args()), ("users.by-id", &42u64.to_le_bytes()[..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLoad {
    loader: String,
    args: Vec<u8>,
}

impl OwnerLoad {
    /// A call of the loader registered as `loader`, with no arguments.
    pub fn new(loader: impl Into<String>) -> Self {
        OwnerLoad {
            loader: loader.into(),
            args: Vec::new(),
        }
    }

    /// The arguments, encoded by the caller (replacing any set before).
    pub fn arg(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.args = bytes.as_ref().to_vec();
        self
    }

    /// The loader's name.
    pub fn loader(&self) -> &str {
        &self.loader
    }

    /// The argument bytes.
    pub fn args(&self) -> &[u8] {
        &self.args
    }
}

/// What a named loader is given on the owner: the key its result is stored
/// under, the caller's argument bytes, and the tags and TTL the result is
/// stored with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLoadRequest {
    pub(crate) key: String,
    pub(crate) args: Vec<u8>,
    pub(crate) tags: Vec<String>,
    pub(crate) ttl: Option<Duration>,
}

impl OwnerLoadRequest {
    /// The key the result is stored under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The caller's argument bytes.
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// The arguments as UTF-8 text, or a rejection the loader can return
    /// with `?` (the caller gets [`CacheError::ArgumentsRejected`]).
    pub fn args_utf8(&self) -> Result<&str, RejectedArguments> {
        std::str::from_utf8(&self.args).map_err(|e| RejectedArguments::new(e.to_string()))
    }

    /// The tags the result is stored with.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The result's TTL; `None` never expires.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }
}

/// A loader's refusal of its arguments. Returned by a named loader (as its
/// error, or converted by `?`), it reaches the caller as
/// [`CacheError::ArgumentsRejected`] rather than as a failed load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedArguments(String);

impl RejectedArguments {
    /// A rejection that says why.
    pub fn new(why: impl Into<String>) -> Self {
        RejectedArguments(why.into())
    }

    /// Why the arguments were rejected.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RejectedArguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RejectedArguments {}

impl<C: Codec> Grid<C> {
    /// The value for `key`, loaded on a miss by the named loader of the
    /// key's owner: `load` names a loader the members registered at build
    /// time (`Grid::member().loader(..)`, feature `cluster`) and carries its
    /// argument bytes. The owner runs it once for every concurrent caller in
    /// the grid (callers on one node send one request), stores the result
    /// with the options' TTL and tags, and answers with the stored bytes;
    /// this node keeps them as a near copy, validated as `T` before any
    /// read. On the member that owns the key it runs there, with no request.
    ///
    /// Errors, each its own variant, with nothing stored:
    /// [`CacheError::UnknownLoader`] (no loader of that name on the owner,
    /// and always on a local grid, which has no named loaders),
    /// [`CacheError::ArgumentsRejected`], [`CacheError::ArgumentsTooLarge`],
    /// [`CacheError::OwnerLoadFailed`] (the loader failed or panicked).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{CacheError, CacheOptions, Grid, OwnerLoad};
    /// let grid = Grid::local().build();
    /// let err = grid
    ///     .get_or_load_on_owner::<String>("user:42", OwnerLoad::new("users.by-id"), CacheOptions::new())
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, CacheError::UnknownLoader { .. }));
    /// # });
    /// ```
    pub async fn get_or_load_on_owner<T: CacheValue<C>>(
        &self,
        key: &str,
        load: OwnerLoad,
        options: CacheOptions,
    ) -> Result<T, CacheError> {
        if let Some(v) = self.get_now::<T>(key)? {
            return Ok(v);
        }
        Box::pin(self.load_on_owner(key, load, options)).await
    }

    async fn load_on_owner<T: CacheValue<C>>(
        &self,
        key: &str,
        load: OwnerLoad,
        options: CacheOptions,
    ) -> Result<T, CacheError> {
        let inner = &*self.inner;
        let Some(remote) = inner.remote.get() else {
            return Err(CacheError::UnknownLoader {
                loader: load.loader,
            });
        };
        let before = inner.stamps.of(key);
        let ttl = inner.ttl_of(options.expiry());
        let loaded = remote
            .owner_load(key, &load, ttl, options.tags.as_slice())
            .await?;
        let bytes = loaded.entry.value.as_ref().as_ref();
        if !loaded.stored_here && !inner.store.contains_key(key.as_bytes()) {
            // Validated as `T` when kept; not kept if an invalidation
            // overtook the reply (the caller still gets the value, as the
            // callers of a local load that an invalidation raced do).
            inner.keep_near_copy::<T, C>(key, before, &loaded.entry)?;
        }
        T::decode(bytes)
    }
}
