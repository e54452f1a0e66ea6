//! One heap block per cached entry: a small header, the key bytes, the value
//! bytes and the entry's tag references, the value starting at a 16-byte
//! aligned offset so rkyv can read it in place.
//!
//! ```text
//! +-------------------+-------------+-----------+-----+-------------+-----+--------------------+
//! | Header (32 bytes) | tag epoch 8 | key bytes | pad | value bytes | pad | TagRef x tag_count |
//! +-------------------+-------------+-----------+-----+-------------+-----+--------------------+
//!                      (if tagged)                     ^ 16-aligned         (8-aligned)
//! ```
//!
//! The tag epoch is the store's tag epoch (see `tags.rs`) at which a reader
//! last found every tag of the entry current: while the store's epoch has
//! not moved since, no tag was invalidated and a hit need not look at the
//! tags' own generations (each a pointer chase to a shared line). The tag
//! references come last for the same reason: a hit reads the header, the
//! key and the value, which are then contiguous (one or two cache lines for
//! small values), and the tags only when the epoch moved.
//!
//! The block is reference counted: the map holds one reference and every
//! [`bytes::Bytes`] handed to the network holds another. Readers that only
//! look at the block while holding a map guard take no reference at all, so a
//! hit writes nothing but (at most) the frequency byte in the header.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::tags::TagState;

/// Alignment of the value bytes inside a block (rkyv's default archive alignment).
pub const VALUE_ALIGN: usize = 16;

/// Expiry value meaning "never expires": the largest expiry the header's
/// 48 bits hold (2^48 ms is about 8,900 years of the store clock).
pub(crate) const NEVER: u64 = (1 << 48) - 1;

/// References past which [`EntryPtr::try_clone`] declines to share the
/// block (its caller copies the value instead), far below the 16-bit
/// count's limit.
const SHARE_LIMIT: u16 = 1 << 14;
/// References at which a clone aborts the process rather than wrap the
/// count: only `try_clone`s racing past [`SHARE_LIMIT`] could get near it.
const REFS_ABORT: u16 = u16::MAX - 1024;

/// Bits of [`Header::freq`] holding the S3-FIFO access frequency (0..=3).
const FREQ_MASK: u8 = 0b11;
/// Bit of [`Header::freq`] set, for the block's lifetime, when the entry is
/// a near copy: another node's value kept here (see
/// [`crate::FillTicket::near_copy`]). Hits on it count as near hits.
const NEAR_BIT: u8 = 0x80;

/// Fixed per-entry header. 32 bytes, which also hold the entry's links in
/// its shard's eviction queue (by key-index slot, so the shard keeps
/// nothing per entry of its own).
#[repr(C)]
pub(crate) struct Header {
    /// The key index's count plus one per shared value handed out
    /// ([`EntryPtr::try_clone`]).
    refs: AtomicU16,
    /// S3-FIFO access frequency (low two bits, saturating at 3) and
    /// [`NEAR_BIT`], which never changes. Written relaxed on hits, only when
    /// the frequency would change.
    freq: AtomicU8,
    tag_count: u8,
    value_len: u32,
    /// The previous and next slot of this entry in its shard's queue, with
    /// the shard's flag bits (shard.rs). Only the holder of the shard's
    /// mutex reads or writes them; atomics (relaxed) because hits read the
    /// rest of the header at the same time.
    pub(crate) prev: AtomicU32,
    pub(crate) next: AtomicU32,
    /// Absolute expiry on the store clock in milliseconds, or [`NEVER`]
    /// (high 48 bits), and the key length (low 16 bits).
    expiry_key: u64,
    /// Which Rust type encoded the value (see [`crate::value::type_tag`]);
    /// 0 for bytes of unknown type that must be validated on every read.
    pub(crate) type_tag: u64,
}

impl Header {
    /// Absolute expiry on the store clock in milliseconds, or [`NEVER`].
    #[inline]
    pub(crate) fn expires_at(&self) -> u64 {
        self.expiry_key >> 16
    }

    #[inline]
    fn key_len(&self) -> usize {
        self.expiry_key as u16 as usize
    }

    /// The access frequency (0..=3).
    #[inline]
    pub(crate) fn freq(&self) -> u8 {
        self.freq.load(Ordering::Relaxed) & FREQ_MASK
    }

    /// Sets the access frequency (`f` <= 3), keeping the near-copy bit.
    /// Called under the shard lock; a concurrent hit's store may win, as
    /// it may for any relaxed frequency update.
    #[inline]
    pub(crate) fn set_freq(&self, f: u8) {
        debug_assert!(f <= FREQ_MASK);
        let b = self.freq.load(Ordering::Relaxed);
        self.freq.store((b & NEAR_BIT) | f, Ordering::Relaxed);
    }

    /// Records a hit: raises the frequency unless it is saturated (a
    /// relaxed store, only when it changes). Returns 1 if the entry is a
    /// near copy, else 0 (read from the same byte; an index, so that the
    /// caller picks its counter without a branch).
    #[inline]
    pub(crate) fn record_hit(&self) -> usize {
        let b = self.freq.load(Ordering::Relaxed);
        if b & FREQ_MASK < FREQ_MASK {
            self.freq.store(b + 1, Ordering::Relaxed);
        }
        (b / NEAR_BIT) as usize
    }
}

/// A tag an entry carries, with the tag generation observed when the entry
/// (or the fill that produced it) was created. The entry is readable only
/// while the tag's generation is unchanged.
pub(crate) struct TagRef {
    pub(crate) state: Arc<TagState>,
    pub(crate) generation: u64,
}

impl TagRef {
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.state.generation() == self.generation
    }
}

impl Clone for TagRef {
    fn clone(&self) -> Self {
        TagRef {
            state: Arc::clone(&self.state),
            generation: self.generation,
        }
    }
}

const HEADER: usize = std::mem::size_of::<Header>();
const TAGREF: usize = std::mem::size_of::<TagRef>();
const EPOCH: usize = std::mem::size_of::<AtomicU64>();

/// Offset of the key: after the header and, for a tagged entry, its tag
/// epoch.
#[inline]
fn key_offset(tag_count: usize) -> usize {
    if tag_count == 0 {
        HEADER
    } else {
        HEADER + EPOCH
    }
}

/// Offset of the value: after the key, 16-byte aligned.
#[inline]
fn value_offset(tag_count: usize, key_len: usize) -> usize {
    (key_offset(tag_count) + key_len).next_multiple_of(VALUE_ALIGN)
}

/// Offset of the tag references: after the value, 8-byte aligned.
#[inline]
fn tags_offset(tag_count: usize, key_len: usize, value_len: usize) -> usize {
    (value_offset(tag_count, key_len) + value_len).next_multiple_of(std::mem::align_of::<TagRef>())
}

struct Offsets {
    layout: Layout,
    key: usize,
    value: usize,
    tags: usize,
}

fn offsets(tag_count: usize, key_len: usize, value_len: usize) -> Offsets {
    let key = key_offset(tag_count);
    let value = value_offset(tag_count, key_len);
    let (tags, end) = if tag_count == 0 {
        (value + value_len, value + value_len)
    } else {
        let tags = tags_offset(tag_count, key_len, value_len);
        (tags, tags + tag_count * TAGREF)
    };
    let size = end.max(HEADER);
    let layout = Layout::from_size_align(size, VALUE_ALIGN).expect("entry layout");
    Offsets {
        layout,
        key,
        value,
        tags,
    }
}

/// Bytes a block of this shape occupies on the heap (excluding allocator
/// bookkeeping), used by the memory accounting.
pub(crate) fn block_size(tag_count: usize, key_len: usize, value_len: usize) -> usize {
    offsets(tag_count, key_len, value_len).layout.size()
}

/// An owning reference to an entry block. This is the key type of the store's
/// map: it hashes and compares as its key bytes, so lookups borrow `&[u8]`.
#[repr(transparent)]
pub(crate) struct EntryPtr(NonNull<Header>);

// SAFETY: the block is immutable after construction except for atomics, and
// its tag references are `Arc<TagState>` which is Send + Sync.
unsafe impl Send for EntryPtr {}
unsafe impl Sync for EntryPtr {}

impl EntryPtr {
    /// Allocates a block and copies key, tags and value into it. Lengths were
    /// validated by the caller against the store limits (which keep them within
    /// the header's integer widths). `near`: the entry is a near copy.
    pub(crate) fn new(
        key: &[u8],
        value: &[u8],
        tags: Vec<TagRef>,
        expires_at: u64,
        type_tag: u64,
        near: bool,
    ) -> EntryPtr {
        debug_assert!(key.len() <= u16::MAX as usize);
        debug_assert!(expires_at <= NEVER);
        debug_assert!(tags.len() <= u8::MAX as usize);
        debug_assert!(value.len() <= u32::MAX as usize);
        let off = offsets(tags.len(), key.len(), value.len());
        // SAFETY: the layout has non-zero size (at least the header).
        let base = unsafe { alloc::alloc(off.layout) };
        let Some(base) = NonNull::new(base) else {
            alloc::handle_alloc_error(off.layout)
        };
        // SAFETY: `base` points to a fresh allocation of `off.layout`, large
        // enough for the header, the tag array, the key and the value at the
        // computed offsets; Header and TagRef are 8-aligned and the block is
        // 16-aligned.
        unsafe {
            let header = base.as_ptr().cast::<Header>();
            header.write(Header {
                refs: AtomicU16::new(1),
                freq: AtomicU8::new(if near { NEAR_BIT } else { 0 }),
                tag_count: tags.len() as u8,
                value_len: value.len() as u32,
                prev: AtomicU32::new(0),
                next: AtomicU32::new(0),
                expiry_key: (expires_at << 16) | key.len() as u64,
                type_tag,
            });
            if !tags.is_empty() {
                // 0: no reader has checked the tags yet (epochs start at 1).
                base.as_ptr()
                    .add(HEADER)
                    .cast::<AtomicU64>()
                    .write(AtomicU64::new(0));
            }
            let tag_base = base.as_ptr().add(off.tags).cast::<TagRef>();
            for (i, tag) in tags.into_iter().enumerate() {
                tag_base.add(i).write(tag);
            }
            ptr::copy_nonoverlapping(key.as_ptr(), base.as_ptr().add(off.key), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), base.as_ptr().add(off.value), value.len());
            EntryPtr(NonNull::new_unchecked(header))
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the block is alive while this reference exists.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn offsets(&self) -> Offsets {
        let h = self.header();
        offsets(h.tag_count as usize, h.key_len(), h.value_len as usize)
    }

    /// The key bytes.
    #[inline]
    pub(crate) fn key(&self) -> &[u8] {
        let h = self.header();
        // SAFETY: the key lies at a fixed offset inside the live block.
        unsafe {
            std::slice::from_raw_parts(
                self.0
                    .as_ptr()
                    .cast::<u8>()
                    .add(key_offset(h.tag_count as usize)),
                h.key_len(),
            )
        }
    }

    /// The value bytes; the slice starts at a 16-byte aligned address.
    #[inline]
    pub(crate) fn value(&self) -> &[u8] {
        let h = self.header();
        let off = value_offset(h.tag_count as usize, h.key_len());
        // SAFETY: the value lies at `off` inside the live block.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>().add(off), h.value_len as usize)
        }
    }

    /// The entry's tag references.
    #[inline]
    pub(crate) fn tags(&self) -> &[TagRef] {
        let h = self.header();
        if h.tag_count == 0 {
            // An untagged block ends with its value: no offset to compute.
            return &[];
        }
        // SAFETY: `tag_count` initialised TagRefs follow the value.
        unsafe {
            std::slice::from_raw_parts(
                self.0
                    .as_ptr()
                    .cast::<u8>()
                    .add(tags_offset(
                        h.tag_count as usize,
                        h.key_len(),
                        h.value_len as usize,
                    ))
                    .cast::<TagRef>(),
                h.tag_count as usize,
            )
        }
    }

    /// True if the entry is neither expired at `now` nor invalidated through
    /// one of its tags. `epoch` is the store's tag epoch, loaded (Acquire)
    /// before this call. If a reader already found
    /// every tag current at that epoch, no tag generation is loaded;
    /// otherwise they are checked, and if all are current the epoch is
    /// recorded in the entry for the next reader.
    ///
    /// Why that is enough: an invalidation bumps the tag's generation and
    /// then the epoch (Release). A reader that recorded `epoch` had loaded
    /// it with Acquire before loading the generations, so it saw every
    /// generation bump of every invalidation that produced an epoch up to
    /// `epoch`; an invalidation whose epoch bump this reader has not seen is
    /// concurrent with it and may be ordered after it.
    #[inline]
    pub(crate) fn is_live_at(&self, now: u64, epoch: u64) -> bool {
        if self.header().expires_at() <= now {
            return false;
        }
        if self.header().tag_count == 0 {
            return true;
        }
        // SAFETY: a tagged block has its epoch right after the header.
        let checked = unsafe { &*self.0.as_ptr().cast::<u8>().add(HEADER).cast::<AtomicU64>() };
        // Relaxed: the value only says that some reader verified the tags
        // at this epoch; nothing else is read through it.
        if checked.load(Ordering::Relaxed) == epoch {
            return true;
        }
        if !self.tags().iter().all(TagRef::is_current) {
            return false;
        }
        checked.store(epoch, Ordering::Relaxed);
        true
    }

    /// Raw pointer, for comparing blocks and for non-owning views.
    #[inline]
    pub(crate) fn as_raw(&self) -> NonNull<Header> {
        self.0
    }

    /// Views a non-owning pointer (a guard's) as an entry.
    ///
    /// # Safety
    /// The block must stay alive while the returned reference is used: the
    /// caller holds the shard lock and the entry is still in the map.
    #[inline]
    pub(crate) unsafe fn from_raw(raw: &NonNull<Header>) -> &EntryPtr {
        // SAFETY: EntryPtr is `repr(transparent)` over NonNull<Header>.
        unsafe { &*(raw as *const NonNull<Header>).cast::<EntryPtr>() }
    }
    /// Takes over the count a raw owner (the key index) held.
    ///
    /// # Safety
    /// `raw` came from an `EntryPtr` whose count was not dropped
    /// (`mem::forget`), and is taken over once.
    #[inline]
    pub(crate) unsafe fn from_owned_raw(raw: NonNull<Header>) -> EntryPtr {
        EntryPtr(raw)
    }
}

/// A view of a block that someone else holds a count of (the key index),
/// valid for `'a` (a reclamation guard's lifetime). Dropping it drops no
/// count; cloning the `EntryPtr` it derefs to takes one.
pub(crate) struct Borrowed<'a>(ManuallyDrop<EntryPtr>, PhantomData<&'a EntryPtr>);

impl Borrowed<'_> {
    /// # Safety
    /// `raw` points to a live block that stays alive for the lifetime.
    #[inline]
    pub(crate) unsafe fn new(raw: NonNull<Header>) -> Self {
        Borrowed(ManuallyDrop::new(EntryPtr(raw)), PhantomData)
    }
}

impl std::ops::Deref for Borrowed<'_> {
    type Target = EntryPtr;

    #[inline]
    fn deref(&self) -> &EntryPtr {
        &self.0
    }
}

impl EntryPtr {
    /// Another count of the block, unless [`SHARE_LIMIT`] counts are out
    /// already: then the caller copies what it needs instead (the count is
    /// 16 bits to keep the header at 32 bytes).
    pub(crate) fn try_clone(&self) -> Option<EntryPtr> {
        // Relaxed, as for `Arc`: a new count is taken from an existing one,
        // which keeps the block alive meanwhile.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old >= REFS_ABORT {
            std::process::abort();
        }
        if old >= SHARE_LIMIT {
            drop(EntryPtr(self.0));
            return None;
        }
        Some(EntryPtr(self.0))
    }
}

impl Drop for EntryPtr {
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let off = self.offsets();
        let tag_count = self.header().tag_count as usize;
        // SAFETY: last reference: drop the tag refs in place and free the block
        // with the layout it was allocated with.
        unsafe {
            let tag_base = self.0.as_ptr().cast::<u8>().add(off.tags).cast::<TagRef>();
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(tag_base, tag_count));
            alloc::dealloc(self.0.as_ptr().cast::<u8>(), off.layout);
        }
    }
}

impl Hash for EntryPtr {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for EntryPtr {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for EntryPtr {}

impl Borrow<[u8]> for EntryPtr {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Owner of a shared value: keeps the block alive for a [`bytes::Bytes`].
pub(crate) struct ValueOwner(pub(crate) EntryPtr);

impl AsRef<[u8]> for ValueOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_32_bytes_and_tagref_16() {
        assert_eq!(HEADER, 32);
        let e = EntryPtr::new(&[b'k'; 300], b"v", Vec::new(), NEVER - 1, 0, false);
        assert_eq!((e.header().expires_at(), e.key().len()), (NEVER - 1, 300));
        assert_eq!(TAGREF, 16);
        assert_eq!(block_size(0, 16, 64), 32 + 16 + 64);
        // header, epoch, key (40..56), padding to 64, value, two tags.
        assert_eq!(block_size(2, 16, 64), 64 + 64 + 2 * 16);
    }

    #[test]
    fn value_is_aligned_for_every_key_length() {
        for key_len in 0..40 {
            let key = vec![b'k'; key_len];
            let e = EntryPtr::new(&key, b"value", Vec::new(), NEVER, 0, false);
            assert_eq!(e.value().as_ptr() as usize % VALUE_ALIGN, 0);
            assert_eq!(e.key(), &key[..]);
            assert_eq!(e.value(), b"value");
        }
    }

    #[test]
    fn clones_share_and_last_drop_frees() {
        let e = EntryPtr::new(b"k", b"v", Vec::new(), NEVER, 0, false);
        let c = e.try_clone().unwrap();
        drop(e);
        assert_eq!(c.value(), b"v");
        let bytes = bytes::Bytes::from_owner(ValueOwner(c.try_clone().unwrap()));
        drop(c);
        assert_eq!(&bytes[..], b"v");
    }

    #[test]
    fn past_the_share_limit_a_clone_is_declined_and_counts_nothing() {
        let e = EntryPtr::new(b"k", b"v", Vec::new(), NEVER, 0, false);
        let held: Vec<_> = (1..SHARE_LIMIT).map(|_| e.try_clone().unwrap()).collect();
        assert!(e.try_clone().is_none());
        assert!(e.try_clone().is_none());
        drop(held);
        let again = e.try_clone().expect("shares again once counts are back");
        drop(e);
        assert_eq!(again.value(), b"v");
    }

    #[test]
    fn the_near_copy_bit_survives_every_frequency_change() {
        for near in [false, true] {
            let e = EntryPtr::new(b"k", b"v", Vec::new(), NEVER, 0, near);
            let h = e.header();
            assert_eq!(h.freq(), 0);
            for f in 1..=3 {
                assert_eq!(h.record_hit(), near as usize);
                assert_eq!(h.freq(), f);
            }
            assert_eq!(h.record_hit(), near as usize, "saturated at 3");
            assert_eq!(h.freq(), 3);
            h.set_freq(1);
            assert_eq!(h.freq(), 1);
            h.set_freq(0);
            assert_eq!((h.record_hit(), h.freq()), (near as usize, 1));
        }
    }
}
