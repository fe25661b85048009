//! The machine's event sink: the [`uapi::event::Event`]s of a traced run,
//! recorded where each step happens (one place per event kind) and handed
//! to the runner by [`uapi::Machine::take_events`].
//!
//! # Contract
//! - Every event is charged to the cost model ([`crate::cost`]), traced or
//!   not: `cost.*` counters do not depend on the trace.
//! - Recording is off by default. While off, [`EventSink::emit`] builds
//!   the event (a plain `Copy` value) for the cost model only: nothing is
//!   allocated or formatted (the access fast path never emits at all).
//! - Owned by the machine (inside [`crate::mem::Memory`], so that the
//!   memory layer's steps, tag block claims and releases and tag
//!   initialisation, are recorded in the same order as the kernel's); no
//!   global state, so machines side by side trace independently.
//! - Events are kept in the order they happened; taking them empties the
//!   sink.

use core::cell::{Cell, RefCell};

use uapi::event::Event;

use crate::cost::CostMeter;

/// Where a machine records its events.
#[derive(Debug)]
pub struct EventSink {
    on: Cell<bool>,
    events: RefCell<Vec<Event>>,
    cost: CostMeter,
}

impl EventSink {
    /// A sink charging events with `platform`'s cost table.
    pub fn new(platform: &platform::Platform) -> Self {
        Self {
            on: Cell::new(false),
            events: RefCell::new(Vec::new()),
            cost: CostMeter::new(platform),
        }
    }

    /// Charges the event `make` builds, and records it if tracing is on.
    #[inline]
    pub fn emit(&self, make: impl FnOnce() -> Event) {
        let event = make();
        self.cost.charge(&event);
        if self.on.get() {
            self.events.borrow_mut().push(event);
        }
    }

    /// The cost model's totals.
    pub fn cost(&self) -> &CostMeter {
        &self.cost
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
    fn nothing_is_recorded_while_off_but_everything_is_charged() {
        let sink = EventSink::new(&platform::Platform::default());
        sink.emit(|| Event::TagRelease { block: 1 });
        assert!(sink.take().is_empty());
        sink.set(true);
        sink.emit(|| Event::TagRelease { block: 2 });
        sink.set(false);
        sink.emit(|| Event::TagRelease { block: 3 });
        assert_eq!(sink.take(), [Event::TagRelease { block: 2 }]);
        assert!(sink.take().is_empty());
        let release = platform::CostEntry::Release.default_cycles();
        assert_eq!(
            sink.cost().counter(uapi::Counter::CostReserve),
            Some(3 * release)
        );
    }
}
