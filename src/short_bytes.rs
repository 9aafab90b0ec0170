//! Short byte strings stored inline: keys of the embedded store's keyspace and of the
//! tracking model's successors. Copying a short key inline costs less than sharing a
//! reference-counted one (no allocation, no atomic count, no pointer to follow).

use bytes::Bytes;

/// Bytes held inline (more than redis-benchmark's `key:000000012345` and most application
/// keys).
pub const INLINE: usize = 22;

/// An owned byte string, inline (in 24 bytes) up to [`INLINE`] bytes, on the heap beyond.
/// Hashes, compares and borrows as the byte string it is, so a map keyed by it is queried by
/// `&[u8]`.
#[derive(Clone)]
pub enum ShortBytes {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl ShortBytes {
    pub fn new(b: &[u8]) -> ShortBytes {
        if b.len() <= INLINE {
            let mut a = [0; INLINE];
            a[..b.len()].copy_from_slice(b);
            ShortBytes::Inline(b.len() as u8, a)
        } else {
            ShortBytes::Heap(b.into())
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }

    /// Bytes held beyond the value itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            ShortBytes::Inline(..) => 0,
            ShortBytes::Heap(b) => b.len(),
        }
    }
}

impl std::ops::Deref for ShortBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ShortBytes::Inline(n, a) => &a[..*n as usize],
            ShortBytes::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for ShortBytes {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl std::hash::Hash for ShortBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq for ShortBytes {
    fn eq(&self, other: &ShortBytes) -> bool {
        **self == **other
    }
}

impl Eq for ShortBytes {}

impl std::fmt::Debug for ShortBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", Bytes::copy_from_slice(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_up_to_the_limit_then_on_the_heap() {
        assert_eq!(std::mem::size_of::<ShortBytes>(), 24);
        for n in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let b: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let s = ShortBytes::new(&b);
            assert_eq!(&s[..], &b[..]);
            assert_eq!(
                matches!(s, ShortBytes::Inline(..)),
                n <= INLINE,
                "{n} bytes"
            );
            assert_eq!(s.heap_bytes(), if n <= INLINE { 0 } else { n });
            assert_eq!(s, ShortBytes::new(&b));
        }
        assert_ne!(ShortBytes::new(b"ab"), ShortBytes::new(b"ab\0"));
    }
}
