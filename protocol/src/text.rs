//! UTF-8 text that shares the frame's buffer instead of copying out of it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// An immutable UTF-8 string backed by [`Bytes`].
///
/// Names (cluster, node id, loader) and messages decoded from a frame are
/// slices of the frame buffer: decoding validates the UTF-8 once and copies
/// nothing. The crate has no `unsafe` code, so [`Text::as_str`] re-checks the
/// (short) bytes on each call; the check cannot fail because a `Text` can only
/// be built from valid UTF-8.
///
/// ```
/// use hydracache_protocol::Text;
///
/// let id = Text::from("api-1");
/// assert_eq!(id, "api-1");
/// assert_eq!(id.len(), 5);
/// assert_eq!(Text::from_static("orders").as_str(), "orders");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// Wraps a static string without allocating.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps `bytes` if they are valid UTF-8, without copying.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use hydracache_protocol::Text;
    ///
    /// assert!(Text::from_utf8(Bytes::from_static(b"ok")).is_ok());
    /// assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
    /// ```
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        // Every constructor checked the bytes, so this never takes the default.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Text {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Text::from(<&str>::arbitrary(u)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_the_buffer() {
        let frame = Bytes::from_static(b"xxnode-7yy");
        let text = Text::from_utf8(frame.slice(2..8)).unwrap();
        assert_eq!(text.as_str(), "node-7");
        assert_eq!(text.as_bytes().as_ptr(), frame[2..].as_ptr());
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert!(Text::from_utf8(Bytes::from_static(&[0xc3, 0x28])).is_err());
    }

    #[test]
    fn formats_like_a_string() {
        let t = Text::from(String::from("a\"b"));
        assert_eq!(format!("{t}"), "a\"b");
        assert_eq!(format!("{t:?}"), "\"a\\\"b\"");
        assert_eq!(String::from(t), "a\"b");
    }
}
