//! The machine's event sink: the [`uapi::event::Event`]s of a traced run,
//! recorded where each step happens (one place per event kind) and handed
//! to the runner by [`uapi::Machine::take_events`].
//!
//! # Contract
//! - Off by default. While off, [`EventSink::emit`] tests one flag and
//!   returns: the event is built by a closure that is never called, so
//!   nothing is allocated or formatted (the access fast path never emits at
//!   all).
//! - Owned by the machine (inside [`crate::mem::Memory`], so that the
//!   memory layer's steps, tag block claims and releases and tag
//!   initialisation, are recorded in the same order as the kernel's); no
//!   global state, so machines side by side trace independently.
//! - Events are kept in the order they happened; taking them empties the
//!   sink.

use core::cell::{Cell, RefCell};

use uapi::event::Event;

/// Where a machine records its events.
#[derive(Debug, Default)]
pub struct EventSink {
    on: Cell<bool>,
    events: RefCell<Vec<Event>>,
}

impl EventSink {
    /// Records the event `make` builds, if tracing is on.
    #[inline]
    pub fn emit(&self, make: impl FnOnce() -> Event) {
        if self.on.get() {
            self.events.borrow_mut().push(make());
        }
    }

    /// Whether events are being recorded.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Turns recording on or off; turning it off drops nothing recorded.
    pub fn set(&self, on: bool) {
        self.on.set(on);
    }

    /// The events recorded so far, oldest first; the sink is left empty.
    pub fn take(&self) -> Vec<Event> {
        core::mem::take(&mut *self.events.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::event::Event;

    #[test]
    fn nothing_is_built_while_off() {
        let sink = EventSink::default();
        sink.emit(|| unreachable!("built while tracing is off"));
        assert!(sink.take().is_empty());
        sink.set(true);
        sink.emit(|| Event::TagRelease { block: 2 });
        sink.set(false);
        sink.emit(|| unreachable!("built while tracing is off"));
        assert_eq!(sink.take(), [Event::TagRelease { block: 2 }]);
        assert!(sink.take().is_empty());
    }
}
