//! Property tests over random lock programs, across all primitives.
//!
//! Each of three CPUs runs a random list of operations on two mutexes, one
//! rwsem and a two-key lock table, with preempt points inside the critical
//! sections and nested mutexes (so deadlocks happen). Under any seed:
//! - exclusion holds at every step (checked inside the critical sections);
//! - a deadlock never involves a free lock: every blocked CPU waits for a
//!   lock somebody holds (a lost wake-up would show up as a holderless wait);
//! - after the run, with or without error, every lock is free again;
//! - replaying the recorded schedule reproduces the run exactly (same
//!   outcome, same event log, whole schedule consumed).

use std::cell::{Cell, RefCell};

use proptest::prelude::*;

use crate::chooser::{Chooser, Recorder, Replay, Seeded};
use crate::executor::{RunLimits, Sched, SchedError, Task};
use crate::mutex::SimMutex;
use crate::rwlock::SimRwLock;
use crate::schedule::Schedule;
use crate::table::LockTable;

#[derive(Clone, Copy, Debug)]
enum Op {
    Preempt,
    Mutex { m: usize, hold: u8 },
    Nested { outer: usize, hold: u8 },
    Read { hold: u8 },
    Write { hold: u8 },
    Key { key: u64, hold: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let hold = 0u8..3;
    prop_oneof![
        Just(Op::Preempt),
        (0usize..2, hold.clone()).prop_map(|(m, hold)| Op::Mutex { m, hold }),
        (0usize..2, hold.clone()).prop_map(|(outer, hold)| Op::Nested { outer, hold }),
        hold.clone().prop_map(|hold| Op::Read { hold }),
        hold.clone().prop_map(|hold| Op::Write { hold }),
        (0u64..2, hold).prop_map(|(key, hold)| Op::Key { key, hold }),
    ]
}

struct World {
    sched: Sched,
    mutexes: [SimMutex<u32>; 2],
    rw: SimRwLock<u32>,
    pages: LockTable<u64>,
    /// CPUs inside each mutex, inside the rwsem (readers, writers), per key.
    in_mutex: [Cell<u32>; 2],
    in_read: Cell<u32>,
    in_write: Cell<u32>,
    in_key: [Cell<u32>; 2],
    log: RefCell<Vec<(u32, usize)>>,
}

impl World {
    fn new() -> Self {
        let sched = Sched::new();
        Self {
            mutexes: [
                SimMutex::new(&sched, "m0", 0),
                SimMutex::new(&sched, "m1", 0),
            ],
            rw: SimRwLock::new(&sched, "rw", 0),
            pages: LockTable::new(&sched, "page_lock"),
            sched,
            in_mutex: Default::default(),
            in_read: Cell::new(0),
            in_write: Cell::new(0),
            in_key: Default::default(),
            log: RefCell::new(Vec::new()),
        }
    }

    async fn hold(&self, points: u8) {
        for _ in 0..points {
            self.sched.preempt_point().await;
        }
    }

    fn enter(count: &Cell<u32>) {
        count.set(count.get() + 1);
    }

    fn leave(count: &Cell<u32>) {
        count.set(count.get() - 1);
    }

    async fn mutex_section(&self, m: usize, hold: u8) {
        let mut g = self.mutexes[m].lock().await;
        Self::enter(&self.in_mutex[m]);
        assert_eq!(self.in_mutex[m].get(), 1, "mutex m{m} shared");
        self.hold(hold).await;
        *g += 1;
        Self::leave(&self.in_mutex[m]);
    }

    async fn task(&self, ops: Vec<Op>) {
        let cpu = self.sched.current_cpu().as_u32();
        for (i, op) in ops.into_iter().enumerate() {
            self.log.borrow_mut().push((cpu, i));
            match op {
                Op::Preempt => self.sched.preempt_point().await,
                Op::Mutex { m, hold } => self.mutex_section(m, hold).await,
                Op::Nested { outer, hold } => {
                    let _g = self.mutexes[outer].lock().await;
                    Self::enter(&self.in_mutex[outer]);
                    assert_eq!(self.in_mutex[outer].get(), 1);
                    Box::pin(self.mutex_section(1 - outer, hold)).await;
                    Self::leave(&self.in_mutex[outer]);
                }
                Op::Read { hold } => {
                    let _g = self.rw.read().await;
                    Self::enter(&self.in_read);
                    assert_eq!(self.in_write.get(), 0, "reader beside writer");
                    self.hold(hold).await;
                    Self::leave(&self.in_read);
                }
                Op::Write { hold } => {
                    let mut g = self.rw.write().await;
                    Self::enter(&self.in_write);
                    assert_eq!((self.in_write.get(), self.in_read.get()), (1, 0));
                    self.hold(hold).await;
                    *g += 1;
                    Self::leave(&self.in_write);
                }
                Op::Key { key, hold } => {
                    let _g = self.pages.lock(key).await;
                    let k = usize::try_from(key).unwrap();
                    Self::enter(&self.in_key[k]);
                    assert_eq!(self.in_key[k].get(), 1, "key {key} shared");
                    self.hold(hold).await;
                    Self::leave(&self.in_key[k]);
                }
            }
        }
    }

    fn assert_all_free(&self) {
        for m in &self.mutexes {
            assert_eq!(m.holder(), None, "{m:?} still held");
        }
        assert_eq!((self.rw.readers(), self.rw.writer()), (0, None));
        assert!(self.pages.locked_keys().is_empty());
    }
}

type Outcome = (Result<(), SchedError>, Vec<(u32, usize)>);

fn run(programs: &[Vec<Op>], chooser: &mut dyn Chooser) -> Outcome {
    let world = World::new();
    let tasks: Vec<Task<'_, ()>> = programs
        .iter()
        .map(|ops| Box::pin(world.task(ops.clone())) as Task<'_, ()>)
        .collect();
    let result = world
        .sched
        .run(tasks, chooser, RunLimits::default())
        .map(|_| ());
    world.assert_all_free();
    (result, world.log.into_inner())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_lock_programs_keep_the_rules_and_replay_exactly(
        programs in prop::collection::vec(prop::collection::vec(op(), 1..5), 3),
        seed in any::<u64>(),
    ) {
        let mut rec = Recorder::new(Seeded::new(seed));
        let (result, log) = run(&programs, &mut rec);
        let schedule: Schedule = rec.into_parts().1;
        if let Err(SchedError::Deadlock { blocked }) = &result {
            for b in blocked {
                prop_assert!(!b.holders.is_empty(), "lost wake-up: {b}");
            }
        } else {
            prop_assert_eq!(&result, &Ok(()));
        }
        let mut replay = Replay::new(schedule.clone());
        let replayed = run(&programs, &mut replay);
        prop_assert_eq!(&replayed, &(result, log));
        prop_assert_eq!(replay.finish(), Ok(()));
        // The schedule survives printing.
        prop_assert_eq!(schedule.to_string().parse::<Schedule>().unwrap(), schedule);
    }
}
