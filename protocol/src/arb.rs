//! `arbitrary` helpers for fields of type `Bytes`, which `arbitrary` does not
//! cover itself.

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

pub(crate) fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    Ok(Bytes::copy_from_slice(<&[u8]>::arbitrary(u)?))
}

pub(crate) fn bytes_vec(u: &mut Unstructured<'_>) -> Result<Vec<Bytes>> {
    u.arbitrary_iter::<&[u8]>()?
        .map(|item| item.map(Bytes::copy_from_slice))
        .collect()
}
