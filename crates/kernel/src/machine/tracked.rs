//! A `RefCell` that counts its mutable borrows, for the incremental
//! checker (`crate::machine::check_frames`).
//!
//! # Contract
//! [`Tracked::generation`] moves at every [`Tracked::borrow_mut`], the
//! only way to change the value (there is no `Deref` to the `RefCell` and
//! no other `&self` method that mutates): equal generations, equal
//! values. A checker may thus keep what it derived from the value and
//! reuse it while the generation stands still. A borrow that changes
//! nothing moves the generation too (the checker then derives again, for
//! nothing but correctly).

use core::cell::{Cell, Ref, RefCell, RefMut};

/// A `RefCell<T>` with a generation (module doc).
#[derive(Debug, Default)]
pub(crate) struct Tracked<T> {
    value: RefCell<T>,
    generation: Cell<u64>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(value: T) -> Self {
        Tracked {
            value: RefCell::new(value),
            generation: Cell::new(0),
        }
    }

    /// `RefCell::borrow`.
    pub(crate) fn borrow(&self) -> Ref<'_, T> {
        self.value.borrow()
    }

    /// `RefCell::borrow_mut`, moving the generation.
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, T> {
        self.generation.set(self.generation.get() + 1);
        self.value.borrow_mut()
    }

    /// Moves at every mutable borrow (module doc).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutable_borrow_moves_the_generation_and_shared_ones_do_not() {
        let t = Tracked::new(vec![1]);
        let g0 = t.generation();
        assert_eq!(t.borrow().len(), 1);
        assert_eq!(t.generation(), g0);
        t.borrow_mut().push(2);
        let g1 = t.generation();
        assert_ne!(g1, g0);
        drop(t.borrow_mut());
        assert_ne!(t.generation(), g1);
        assert_eq!(*t.borrow(), [1, 2]);
    }
}
