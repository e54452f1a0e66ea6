//! Loading a missing key once in the whole cluster: leases (Load, LoadReply,
//! Fill) and loaders run by the owner (OwnerLoad, OwnerLoadReply).

use bytes::Bytes;

use crate::error::{Field, ProtocolError};
use crate::text::Text;
use crate::wire::{Reader, Writer};

use super::{
    read_key, read_tags, read_ttl, unknown_status, write_key, write_tags, write_ttl, Entry,
};

/// Ask the owner for a key, or for the right to load it (a lease).
///
/// Wire layout: `u64` epoch, key (`u16` length + bytes), tags (`u16` count,
/// items): the tags the caller will store the value with, so that the owner
/// can void the lease when one of them is invalidated.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::Load;
///
/// let l = Load { epoch: 3, key: Bytes::from_static(b"report:7"), tags: vec![] };
/// assert_eq!(&l.key[..], b"report:7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Load {
    /// The membership epoch at which the sender computed the owner.
    pub epoch: u64,
    /// The key.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
    /// The tags the value will be stored with.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))]
    pub tags: Vec<Bytes>,
}

impl Load {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Load {
            epoch: r.u64(Field::Epoch)?,
            key: read_key(r)?,
            tags: read_tags(r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.epoch);
        write_key(w, &self.key)?;
        write_tags(w, &self.tags)
    }
}

/// The owner's answer to a [`Load`].
///
/// Wire layout: a `u8` status, then its body:
///
/// | status | reply | body |
/// |---|---|---|
/// | 0 | `Hit` | entry |
/// | 1 | `Granted` | `u64` lease token |
/// | 2 | `Wait` | `u32` retry after, milliseconds |
/// | 3 | `WrongOwner` | `u64` current epoch |
/// | 4 | `Failed` | node id (`u16` length + UTF-8), message (`u16` length + UTF-8) |
/// | 5 | `Loaded` | entry |
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum LoadReply {
    /// The value is there already.
    Hit(Entry),
    /// The requester holds the lease: run the loader, then send a [`Fill`].
    Granted {
        /// Names the lease in the [`Fill`].
        token: u64,
    },
    /// Another node holds the lease; ask again after the delay.
    Wait {
        /// Suggested delay before asking again, in milliseconds.
        retry_after_ms: u32,
    },
    /// The responder does not own the key at its epoch.
    WrongOwner {
        /// The responder's current membership epoch.
        epoch: u64,
    },
    /// The lease holder's loader failed or panicked; nothing was stored.
    Failed {
        /// The node whose loader failed.
        node: Text,
        /// The loader's error, as text.
        message: Text,
    },
    /// The value the lease holder loaded, for this request only: an
    /// invalidation voided the lease while it loaded, so the owner did not
    /// store it and the requester must not keep it either.
    Loaded(Entry),
}

impl LoadReply {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8(Field::Status)? {
            0 => LoadReply::Hit(Entry::read(r)?),
            1 => LoadReply::Granted {
                token: r.u64(Field::Token)?,
            },
            2 => LoadReply::Wait {
                retry_after_ms: r.u32(Field::RetryAfter)?,
            },
            3 => LoadReply::WrongOwner {
                epoch: r.u64(Field::Epoch)?,
            },
            4 => {
                let limit = r.limits.max_name_len;
                LoadReply::Failed {
                    node: r.text16(Field::NodeId, limit)?,
                    message: r.text16(Field::Message, usize::from(u16::MAX))?,
                }
            }
            5 => LoadReply::Loaded(Entry::read(r)?),
            _ => return unknown_status(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        match self {
            LoadReply::Hit(entry) => {
                w.u8(0);
                entry.write(w)?;
            }
            LoadReply::Granted { token } => {
                w.u8(1);
                w.u64(*token);
            }
            LoadReply::Wait { retry_after_ms } => {
                w.u8(2);
                w.u32(*retry_after_ms);
            }
            LoadReply::WrongOwner { epoch } => {
                w.u8(3);
                w.u64(*epoch);
            }
            LoadReply::Failed { node, message } => {
                w.u8(4);
                let limit = w.limits.max_name_len;
                w.bytes16(Field::NodeId, node.as_bytes(), limit)?;
                w.bytes16(Field::Message, message.as_bytes(), usize::from(u16::MAX))?;
            }
            LoadReply::Loaded(entry) => {
                w.u8(5);
                entry.write(w)?;
            }
        }
        Ok(())
    }
}

/// The lease holder hands the owner the value it loaded.
///
/// The owner stores it only if `token` names the lease still current for the
/// key (an invalidation in between revokes the lease).
///
/// Wire layout: `u64` lease token, key (`u16` length + bytes), entry.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{Entry, Fill};
///
/// let fill = Fill {
///     token: 77,
///     key: Bytes::from_static(b"report:7"),
///     entry: Entry::new(Bytes::from_static(b"archived")).with_ttl_ms(30_000),
/// };
/// assert_eq!(fill.token, 77);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Fill {
    /// The token from [`LoadReply::Granted`].
    pub token: u64,
    /// The key.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
    /// The loaded value, its TTL and tags.
    pub entry: Entry,
}

impl Fill {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Fill {
            token: r.u64(Field::Token)?,
            key: read_key(r)?,
            entry: Entry::read(r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.token);
        write_key(w, &self.key)?;
        self.entry.write(w)
    }
}

/// The lease holder's loader failed or panicked: the owner hands the error
/// to every requester waiting on the lease, stores nothing and drops the
/// lease, so the next requester is granted a new one.
///
/// Wire layout: `u64` lease token, key (`u16` length + bytes), message
/// (`u16` length + UTF-8).
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::Abandon;
///
/// let a = Abandon { token: 77, key: Bytes::from_static(b"report:7"), message: "db timeout".into() };
/// assert_eq!(a.message, "db timeout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Abandon {
    /// The token from [`LoadReply::Granted`].
    pub token: u64,
    /// The key.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
    /// The loader's error (or panic message), as text.
    pub message: Text,
}

impl Abandon {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Abandon {
            token: r.u64(Field::Token)?,
            key: read_key(r)?,
            message: r.text16(Field::Message, usize::from(u16::MAX))?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.token);
        write_key(w, &self.key)?;
        w.bytes16(
            Field::Message,
            self.message.as_bytes(),
            usize::from(u16::MAX),
        )
    }
}

/// Ask the owner to run a loader it has registered under `loader`, with
/// arguments the loader decodes itself, and store the result under `key`.
///
/// Wire layout: `u64` epoch, loader name (`u16` length + UTF-8), key (`u16`
/// length + bytes), TTL (`u8` presence, `u64` ms), tags (`u16` count, items),
/// arguments (`u32` length, zero padding to a 16-aligned frame offset, bytes).
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::OwnerLoad;
///
/// let call = OwnerLoad {
///     epoch: 12,
///     loader: "user_by_id".into(),
///     key: Bytes::from_static(b"user:42"),
///     ttl_ms: Some(60_000),
///     tags: vec![Bytes::from_static(b"users")],
///     args: Bytes::copy_from_slice(&42u64.to_le_bytes()),
/// };
/// assert_eq!(call.loader, "user_by_id");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct OwnerLoad {
    /// The membership epoch at which the sender computed the owner.
    pub epoch: u64,
    /// The registered name of the loader.
    pub loader: Text,
    /// The key to store the result under.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
    /// TTL for the stored result, in milliseconds; `None` never expires.
    pub ttl_ms: Option<u64>,
    /// Tags for the stored result.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))]
    pub tags: Vec<Bytes>,
    /// The loader's arguments, encoded by the caller (aligned like values, so
    /// they can be an rkyv archive too).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub args: Bytes,
}

impl OwnerLoad {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let epoch = r.u64(Field::Epoch)?;
        let limit = r.limits.max_name_len;
        let loader = r.text16(Field::LoaderName, limit)?;
        let key = read_key(r)?;
        let ttl_ms = read_ttl(r)?;
        let tags = read_tags(r)?;
        let args = r.blob(Field::Arguments)?;
        Ok(OwnerLoad {
            epoch,
            loader,
            key,
            ttl_ms,
            tags,
            args,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.epoch);
        let limit = w.limits.max_name_len;
        w.bytes16(Field::LoaderName, self.loader.as_bytes(), limit)?;
        write_key(w, &self.key)?;
        write_ttl(w, self.ttl_ms);
        write_tags(w, &self.tags)?;
        w.blob(Field::Arguments, &self.args)
    }
}

/// The owner's answer to an [`OwnerLoad`].
///
/// Wire layout: a `u8` status, then its body:
///
/// | status | reply | body |
/// |---|---|---|
/// | 0 | `Loaded` | entry |
/// | 1 | `WrongOwner` | `u64` current epoch |
/// | 2 | `UnknownLoader` | nothing |
/// | 3 | `Failed` | message (`u16` length + UTF-8) |
/// | 4 | `Rejected` | message (`u16` length + UTF-8) |
/// | 5 | `ArgumentsTooLarge` | `u32` the owner's limit in bytes |
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OwnerLoadReply {
    /// The value (from the cache, or just loaded and stored).
    Loaded(Entry),
    /// The responder does not own the key at its epoch.
    WrongOwner {
        /// The responder's current membership epoch.
        epoch: u64,
    },
    /// No loader is registered under that name on the owner.
    UnknownLoader,
    /// The loader ran and returned an error (or panicked).
    Failed {
        /// The loader's error, as text.
        message: Text,
    },
    /// The loader refused the arguments (they do not decode, or are out of
    /// its range); nothing was loaded.
    Rejected {
        /// Why, as the loader said it.
        message: Text,
    },
    /// The arguments are longer than the owner accepts; the loader did not
    /// run.
    ArgumentsTooLarge {
        /// The owner's limit in bytes.
        limit: u32,
    },
}

impl OwnerLoadReply {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8(Field::Status)? {
            0 => OwnerLoadReply::Loaded(Entry::read(r)?),
            1 => OwnerLoadReply::WrongOwner {
                epoch: r.u64(Field::Epoch)?,
            },
            2 => OwnerLoadReply::UnknownLoader,
            3 => OwnerLoadReply::Failed {
                message: r.text16(Field::Message, usize::from(u16::MAX))?,
            },
            4 => OwnerLoadReply::Rejected {
                message: r.text16(Field::Message, usize::from(u16::MAX))?,
            },
            5 => OwnerLoadReply::ArgumentsTooLarge {
                limit: r.u32(Field::Arguments)?,
            },
            _ => return unknown_status(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        match self {
            OwnerLoadReply::Loaded(entry) => {
                w.u8(0);
                entry.write(w)?;
            }
            OwnerLoadReply::WrongOwner { epoch } => {
                w.u8(1);
                w.u64(*epoch);
            }
            OwnerLoadReply::UnknownLoader => w.u8(2),
            OwnerLoadReply::Failed { message } => {
                w.u8(3);
                w.bytes16(Field::Message, message.as_bytes(), usize::from(u16::MAX))?;
            }
            OwnerLoadReply::Rejected { message } => {
                w.u8(4);
                w.bytes16(Field::Message, message.as_bytes(), usize::from(u16::MAX))?;
            }
            OwnerLoadReply::ArgumentsTooLarge { limit } => {
                w.u8(5);
                w.u32(*limit);
            }
        }
        Ok(())
    }
}
