//! `cacheable!` and `cacheable_infallible!`: a cached computation in one
//! expression.

/// Expands to [`Grid::get_or_load`](crate::Grid::get_or_load) with options
/// built from the arguments; evaluates to a future of `Result<T, CacheError>`.
/// Arguments, in this order: `cache`, `key`, then optionally `tag`, `tags`
/// (anything [`CacheOptions::tags`](crate::CacheOptions::tags) takes, a
/// [`TagSet`](crate::TagSet) included), `ttl_secs`, then `load`: a closure
/// returning a future of `Result<T, E>`, as [`Grid::get_or_load`](crate::Grid::get_or_load)
/// takes it (`|| async { .. }`, or `move || async move { .. }` to own what it captures).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{cacheable, Grid, TagSet};
///
/// async fn load_user(id: u64) -> Result<String, std::io::Error> { Ok(format!("user-{id}")) }
///
/// let grid = Grid::local().build();
/// let id = 42;
/// let user: String = cacheable!(
///     cache = grid,
///     key = format!("user:{id}"),
///     tags = TagSet::new().entity("user", id).tag("users"),
///     ttl_secs = 60,
///     load = move || async move { load_user(id).await },
/// )
/// .await
/// .unwrap();
/// assert_eq!(user, "user-42");
/// # });
/// ```
#[macro_export]
macro_rules! cacheable {
    (
        cache = $cache:expr,
        key = $key:expr,
        $(tag = $tag:expr,)?
        $(tags = $tags:expr,)?
        $(ttl_secs = $ttl:expr,)?
        load = $load:expr $(,)?
    ) => {
        $crate::__cacheable!(get_or_load, $cache, $key, [$($tag)?], [$($tags)?], [$($ttl)?], $load)
    };
}

/// Like [`cacheable!`] but `load` is a closure returning an infallible
/// future of `T` ([`Grid::get_or_insert_with`](crate::Grid::get_or_insert_with)).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{cacheable_infallible, Grid};
///
/// let grid = Grid::local().build();
/// let n: u64 = cacheable_infallible!(cache = grid, key = "answer", tag = "numbers", load = || async { 42 })
///     .await
///     .unwrap();
/// assert_eq!(n, 42);
/// # });
/// ```
#[macro_export]
macro_rules! cacheable_infallible {
    (
        cache = $cache:expr,
        key = $key:expr,
        $(tag = $tag:expr,)?
        $(tags = $tags:expr,)?
        $(ttl_secs = $ttl:expr,)?
        load = $load:expr $(,)?
    ) => {
        $crate::__cacheable!(get_or_insert_with, $cache, $key, [$($tag)?], [$($tags)?], [$($ttl)?], $load)
    };
}

/// The expansion both `cacheable!` macros share: options from the optional
/// arguments, then `method` on the cache. Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __cacheable {
    ($method:ident, $cache:expr, $key:expr, [$($tag:expr)?], [$($tags:expr)?], [$($ttl:expr)?], $load:expr) => {{
        let options = $crate::CacheOptions::new()
            $(.tag($tag))?
            $(.tags($tags))?
            $(.ttl(::std::time::Duration::from_secs($ttl)))?;
        let key: ::std::string::String = ::std::string::String::from($key);
        let cache = &$cache;
        let load = $load;
        async move { cache.$method(&key, options, load).await }
    }};
}
