//! Sparse per-frame arrays, allocated a section at a time on first use.
//!
//! Linux: `CONFIG_SPARSEMEM`, where `mem_section[]` holds a `struct page`
//! array per section of present memory. Here a section's array is allocated
//! only when one of its frames first needs per-frame data (an allocation, a
//! claim, a page with contents), so host memory grows with the memory in use,
//! not with the machine: an untouched section costs one empty slot of the
//! section table (16 bytes per `2^section_shift` frames of the layout's span).
//!
//! Invariant: a materialised section's slice has exactly `2^section_shift`
//! entries; sections never go away once materialised (as Linux's memmap).

use mte::{Pfn, PfnRange};

/// A per-frame array of `T` over a frame span, materialised per section.
#[derive(Clone, Debug)]
pub(crate) struct Sparse<T> {
    /// The section number of the first section of the span.
    first_section: u64,
    shift: u32,
    sections: Vec<Option<Box<[T]>>>,
    materialised: usize,
}

impl<T: Clone + Default> Sparse<T> {
    /// An empty array covering `span`, with `2^shift` frames per section.
    pub(crate) fn new(span: PfnRange, shift: u32) -> Self {
        let first_section = span.start.as_u64() >> shift;
        let last_section = (span.end().as_u64() - 1) >> shift;
        let count = usize::try_from(last_section - first_section + 1)
            .expect("BUG: section table larger than the address space");
        Self {
            first_section,
            shift,
            sections: vec![None; count],
            materialised: 0,
        }
    }

    #[inline]
    fn locate(&self, pfn: Pfn) -> Option<(usize, usize)> {
        let section = (pfn.as_u64() >> self.shift).checked_sub(self.first_section)?;
        let section = usize::try_from(section).ok()?;
        if section >= self.sections.len() {
            return None;
        }
        let index = usize::try_from(pfn.as_u64() & ((1 << self.shift) - 1))
            .expect("BUG: in-section index above usize");
        Some((section, index))
    }

    /// The first frame of the section that holds `pfn`.
    pub(crate) fn section_start(&self, pfn: Pfn) -> Pfn {
        Pfn::new(pfn.as_u64() & !((1 << self.shift) - 1))
    }

    pub(crate) fn section_pages(&self) -> u64 {
        1 << self.shift
    }

    pub(crate) fn get(&self, pfn: Pfn) -> Option<&T> {
        let (section, index) = self.locate(pfn)?;
        self.sections[section].as_ref().map(|s| &s[index])
    }

    /// [`Self::get`] with the number of the section (from the span's
    /// first, as [`Self::section_range`] takes it) holding `pfn`.
    #[inline]
    pub(crate) fn get_in_section(&self, pfn: Pfn) -> Option<(usize, &T)> {
        let (section, index) = self.locate(pfn)?;
        self.sections[section]
            .as_ref()
            .map(|s| (section, &s[index]))
    }

    /// Number of sections of the span, materialised or not.
    pub(crate) fn section_count(&self) -> usize {
        self.sections.len()
    }

    /// The frames of section number `i` (from the span's first).
    pub(crate) fn section_range(&self, i: usize) -> PfnRange {
        PfnRange::new(
            Pfn::new((self.first_section + i as u64) << self.shift),
            1 << self.shift,
        )
    }

    pub(crate) fn get_mut(&mut self, pfn: Pfn) -> Option<&mut T> {
        let (section, index) = self.locate(pfn)?;
        self.sections[section].as_mut().map(|s| &mut s[index])
    }

    pub(crate) fn is_materialised(&self, pfn: Pfn) -> bool {
        self.locate(pfn)
            .is_some_and(|(section, _)| self.sections[section].is_some())
    }

    /// The entry of `pfn`, materialising its section first with `init`
    /// (called with the section's first frame and its default-filled slice).
    /// Panics (a `BUG:`) outside the span: callers check presence first.
    pub(crate) fn get_or_materialise(
        &mut self,
        pfn: Pfn,
        init: impl FnOnce(Pfn, &mut [T]),
    ) -> &mut T {
        let (section, index) = self
            .locate(pfn)
            .unwrap_or_else(|| panic!("BUG: frame {pfn} outside the sparse span"));
        if self.sections[section].is_none() {
            let mut fresh = vec![T::default(); 1 << self.shift].into_boxed_slice();
            init(self.section_start(pfn), &mut fresh);
            self.sections[section] = Some(fresh);
            self.materialised += 1;
        }
        let slice = self.sections[section]
            .as_mut()
            .expect("BUG: section just materialised");
        &mut slice[index]
    }

    /// `count` entries from `pfn`, inside one materialised section.
    pub(crate) fn slice(&self, pfn: Pfn, count: u64) -> Option<&[T]> {
        let (section, index) = self.locate(pfn)?;
        let end = index + usize::try_from(count).ok()?;
        self.sections[section].as_ref()?.get(index..end)
    }

    pub(crate) fn slice_mut(&mut self, pfn: Pfn, count: u64) -> Option<&mut [T]> {
        let (section, index) = self.locate(pfn)?;
        let end = index + usize::try_from(count).ok()?;
        self.sections[section].as_mut()?.get_mut(index..end)
    }

    /// Like [`Self::get_or_materialise`] for `count` entries from `pfn`,
    /// which must lie in one section (a `BUG:` otherwise).
    pub(crate) fn get_or_materialise_slice(
        &mut self,
        pfn: Pfn,
        count: u64,
        init: impl FnOnce(Pfn, &mut [T]),
    ) -> &mut [T] {
        self.get_or_materialise(pfn, init);
        self.slice_mut(pfn, count)
            .unwrap_or_else(|| panic!("BUG: {count} entries from {pfn} cross a section"))
    }

    /// Every materialised section as (first frame, entries), in frame order.
    pub(crate) fn materialised(&self) -> impl Iterator<Item = (Pfn, &[T])> {
        self.sections.iter().enumerate().filter_map(|(i, s)| {
            s.as_deref().map(|slice| {
                let section = self.first_section + i as u64;
                (Pfn::new(section << self.shift), slice)
            })
        })
    }

    pub(crate) fn materialised_count(&self) -> usize {
        self.materialised
    }

    /// Host bytes used: the section table plus every materialised section.
    pub(crate) fn host_bytes(&self) -> usize {
        self.sections.capacity() * size_of::<Option<Box<[T]>>>()
            + self.materialised * (1usize << self.shift) * size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_materialise_on_first_use_only() {
        // Span [100, 300) with 64-frame sections: sections 1..=4.
        let mut s: Sparse<u32> = Sparse::new(PfnRange::new(Pfn::new(100), 200), 6);
        assert_eq!(s.get(Pfn::new(150)), None);
        assert!(!s.is_materialised(Pfn::new(150)));
        let mut seen = None;
        *s.get_or_materialise(Pfn::new(150), |start, slice| {
            seen = Some((start, slice.len()));
            slice[0] = 7;
        }) = 9;
        assert_eq!(seen, Some((Pfn::new(128), 64)));
        assert_eq!(s.get(Pfn::new(128)), Some(&7));
        assert_eq!(s.get(Pfn::new(150)), Some(&9));
        assert_eq!(s.get(Pfn::new(200)), None, "section 3 is still untouched");
        assert_eq!(s.materialised_count(), 1);
        // Frames outside the span have no entry.
        assert_eq!(s.get(Pfn::new(50)), None);
        assert_eq!(s.get(Pfn::new(400)), None);
        let sections: Vec<_> = s.materialised().map(|(p, sl)| (p, sl.len())).collect();
        assert_eq!(sections, vec![(Pfn::new(128), 64)]);
        assert!(s.host_bytes() >= 64 * 4);
    }
}
