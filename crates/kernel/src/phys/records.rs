//! Per-frame records of the incremental checkers (what a frame's verdict
//! contributed at the last check), kept densely in chunks of
//! [`CHUNK_PAGES`] frames: a rechecked frame costs an index into its
//! chunk, and a chunk exists only once one of its frames has a record
//! other than the default. Chunks rather than whole sparse sections
//! (2^15 frames): a machine of a few thousand frames allocates and
//! zeroes what it uses, not a section's worth per checker at its first
//! check (the fuzzer boots a machine per program).

use std::collections::BTreeMap;

use mte::Pfn;

/// Frames per chunk.
pub(crate) const CHUNK_PAGES: u64 = 512;

/// A record per frame; absent frames have `T::default()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct FrameRecords<T> {
    chunks: BTreeMap<u64, Box<[T]>>,
}

impl<T: Copy + Default + PartialEq> FrameRecords<T> {
    /// The record of `pfn`.
    #[inline]
    pub(crate) fn get(&self, pfn: Pfn) -> T {
        let (chunk, at) = (pfn.as_u64() / CHUNK_PAGES, pfn.as_u64() % CHUNK_PAGES);
        self.chunks
            .get(&chunk)
            .map_or_else(T::default, |c| c[at as usize])
    }

    /// Sets the record of `pfn`, returning the old one.
    #[inline]
    pub(crate) fn set(&mut self, pfn: Pfn, record: T) -> T {
        let (chunk, at) = (pfn.as_u64() / CHUNK_PAGES, pfn.as_u64() % CHUNK_PAGES);
        match self.chunks.get_mut(&chunk) {
            Some(c) => core::mem::replace(&mut c[at as usize], record),
            None if record == T::default() => record,
            None => {
                let mut c = vec![T::default(); CHUNK_PAGES as usize].into_boxed_slice();
                c[at as usize] = record;
                self.chunks.insert(chunk, c);
                T::default()
            }
        }
    }

    /// Forgets every record.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_default_until_set_and_chunks_are_independent() {
        let mut r = FrameRecords::<u32>::default();
        assert_eq!(r.get(Pfn::new(5)), 0);
        assert_eq!(r.set(Pfn::new(5), 0), 0);
        assert!(r.chunks.is_empty(), "a default record allocates nothing");
        assert_eq!(r.set(Pfn::new(5), 7), 0);
        assert_eq!(r.set(Pfn::new(5 + CHUNK_PAGES), 9), 0);
        assert_eq!(r.set(Pfn::new(5), 8), 7);
        assert_eq!(
            (r.get(Pfn::new(5)), r.get(Pfn::new(5 + CHUNK_PAGES))),
            (8, 9)
        );
        assert_eq!(r.get(Pfn::new(6)), 0);
        r.clear();
        assert_eq!(r.get(Pfn::new(5)), 0);
    }
}
