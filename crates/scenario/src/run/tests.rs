//! The runner against a test double: a machine that logs every op and
//! answers as each test tells it.

use std::collections::BTreeMap;

use mte::{Tag, TagMask, TaggedPtr};
use sched::{ChoicePoint, Chooser, CpuId, Schedule};
use uapi::{
    AccessSize, Bound, Command as UCommand, Counter, Errno, Fault, FaultCode, Machine,
    MachineError, Op, Outcome, PageState, Pid, Reply,
};

use super::*;

type Answer = Box<dyn FnMut(&Op, &mut Double) -> Option<Reply>>;

/// Logs ops; answers with `answer` when it returns a reply, else with
/// [`Double::default_reply`].
#[derive(Default)]
struct Double {
    log: Vec<Op>,
    next_pid: u32,
    next_map: u64,
    counters: BTreeMap<Counter, u64>,
    tags: Option<Vec<Tag>>,
    pages: BTreeMap<PageState, bool>,
    violations: Vec<uapi::Violation>,
    /// `run_parallel` fails this way (after asking the chooser).
    parallel_error: Option<MachineError>,
    /// The order `run_parallel` ran its ops in, per block.
    orders: Vec<Vec<usize>>,
}

/// Where the double places mappings: 0x1000_0000, 0x2000_0000, ...
const MAP_STRIDE: u64 = 0x1000_0000;

impl Double {
    fn default_reply(&mut self, op: &Op) -> Reply {
        match op {
            Op::Spawn
            | Op::Process {
                command: UCommand::Fork,
                ..
            } => {
                self.next_pid += 1;
                Reply::binding(Outcome::Ok, Bound::Process(Pid(self.next_pid)))
            }
            Op::Process { command, .. } => match command {
                UCommand::Mmap { .. } => {
                    self.next_map += 1;
                    let base = TaggedPtr::from_raw(self.next_map * MAP_STRIDE);
                    Reply::binding(Outcome::Ok, Bound::Pointer(base))
                }
                UCommand::Load { .. } | UCommand::PrctlGet => Reply::new(Outcome::Value(0)),
                UCommand::Irg { ptr, .. } => {
                    let tag = Tag::new(5).unwrap();
                    Reply::binding(Outcome::Tag(tag), Bound::Pointer(ptr.with_tag(tag)))
                }
                UCommand::Addg { ptr, offset, .. } => {
                    let ptr = ptr.checked_add(offset.bytes()).unwrap();
                    Reply::binding(Outcome::Tag(ptr.tag()), Bound::Pointer(ptr))
                }
                UCommand::WriteFd { len, .. } | UCommand::ReadFd { len, .. } => {
                    Reply::new(Outcome::Count(*len))
                }
                UCommand::Ldg { .. } => Reply::new(Outcome::Tag(Tag::default())),
                _ => Reply::new(Outcome::Ok),
            },
            _ => Reply::new(Outcome::Ok),
        }
    }
}

struct Answering {
    double: Double,
    answer: Answer,
}

impl Answering {
    fn new(answer: impl FnMut(&Op, &mut Double) -> Option<Reply> + 'static) -> Answering {
        Answering {
            double: Double::default(),
            answer: Box::new(answer),
        }
    }

    fn plain() -> Answering {
        Answering::new(|_, _| None)
    }
}

impl Machine for Answering {
    fn run(&mut self, op: &Op) -> Reply {
        self.double.log.push(op.clone());
        match (self.answer)(op, &mut self.double) {
            Some(reply) => reply,
            None => self.double.default_reply(op),
        }
    }

    /// Asks the chooser at every point where two or more ops are left, and
    /// runs the chosen op to completion (a machine whose ops have no switch
    /// points inside).
    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        let mut left: Vec<CpuId> = (0..ops.len() as u32).map(CpuId::new).collect();
        let mut replies: Vec<Option<Reply>> = vec![None; ops.len()];
        let mut order = Vec::new();
        let mut previous = None;
        while !left.is_empty() {
            let cpu = if left.len() == 1 {
                left[0]
            } else {
                let point = ChoicePoint {
                    runnable: &left,
                    previous,
                    steps: &[],
                };
                chooser
                    .choose(&point)
                    .map_err(|e| MachineError::Schedule(e.into()))?
            };
            if let Some(error) = self.double.parallel_error.clone() {
                return Err(error);
            }
            left.retain(|&c| c != cpu);
            order.push(cpu.index());
            replies[cpu.index()] = Some(self.run(&ops[cpu.index()]));
            previous = None;
        }
        self.double.orders.push(order);
        Ok(replies.into_iter().map(Option::unwrap).collect())
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.double.counters.get(&counter).copied()
    }

    fn tags(&self, _pid: Pid, _ptr: TaggedPtr, _len: u64) -> Option<Vec<Tag>> {
        self.double.tags.clone()
    }

    fn page_state(&self, _pid: Pid, _ptr: TaggedPtr, state: PageState) -> Option<bool> {
        if self.double.pages.is_empty() {
            return None;
        }
        Some(self.double.pages.get(&state).copied().unwrap_or(false))
    }

    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        self.double.violations.clone()
    }
}

fn script(src: &str) -> Script {
    lang::parse("t.mte", src.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn run(src: &str, machine: &mut Answering) -> RunReport {
    run_with(src, machine, &RunOptions::default())
}

fn run_with(src: &str, machine: &mut Answering, options: &RunOptions) -> RunReport {
    let script = script(src);
    let mut runner =
        Runner::new(machine, options, &script.platform_spec()).with_source(src.as_bytes());
    for stmt in &script.stmts {
        runner.statement(stmt, &script.names);
    }
    runner.finish()
}

fn lines(report: &RunReport) -> Vec<(u32, &str)> {
    report
        .failures
        .iter()
        .map(|f| (f.line, f.message.as_str()))
        .collect()
}

fn ptr(raw: u64) -> TaggedPtr {
    TaggedPtr::from_raw(raw)
}

fn process_ops(machine: &Answering) -> Vec<UCommand> {
    machine
        .double
        .log
        .iter()
        .filter_map(|op| match op {
            Op::Process { command, .. } => Some(command.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pointers_keep_the_slot_tag_unless_overridden() {
    // Spec, "Pointers": `buf+0x20` keeps the tag; `#T` replaces bits 59:56;
    // a raw address's bits 59:56 are its tag.
    let mut m = Answering::plain();
    let report = run(
        "spawn p\np mmap a 4K\np irg t a\np load t+0x20 8\np load t+0x20#3 8\n\
         p load a-0x10#15 8\np load 0x0a00_0000_1000_0008 8\n",
        &mut m,
    );
    assert_eq!(lines(&report), []);
    let loads: Vec<TaggedPtr> = process_ops(&m)
        .into_iter()
        .filter_map(|c| match c {
            UCommand::Load { ptr, size } => {
                assert_eq!(size, AccessSize::B8);
                Some(ptr)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        loads,
        [
            ptr(0x0500_0000_1000_0020),
            ptr(0x0300_0000_1000_0020),
            ptr(0x0f00_0000_0fff_fff0),
            ptr(0x0a00_0000_1000_0008),
        ]
    );
    // The first command of `p` went to the pid `spawn` bound.
    assert!(matches!(m.double.log[1], Op::Process { pid: Pid(1), .. }));
}

#[test]
fn a_failed_mmap_binds_zero_and_a_pointer_below_zero_fails_its_line() {
    // Spec: "If the call fails, NAME is bound to address 0". `a-16` is
    // then below address 0: the line fails, is not run, and the run goes on.
    let mut m = Answering::new(|op, _| match op {
        Op::Process {
            command: UCommand::Mmap { .. },
            ..
        } => Some(Reply::new(Outcome::Error(Errno::NoMem))),
        _ => None,
    });
    let report = run(
        "spawn p\np mmap a 1T => error ENOMEM\np load a 8 => value 0\np load a-16 8\n\
         p load a+0xff_ffff_ffff_fff8 8 => value 0\np yield => error EINVAL\n",
        &mut m,
    );
    assert_eq!(
        lines(&report),
        [
            (
                4,
                "pointer `a-0x10` (a = 0x0) cannot be evaluated: 0x0 - 0x10 goes below address 0"
            ),
            (6, "expected error EINVAL, got ok"),
        ]
    );
    assert_eq!(
        process_ops(&m)
            .iter()
            .filter(|c| matches!(c, UCommand::Load { .. }))
            .count(),
        2,
        "the line whose pointer failed did not run"
    );
    assert!(matches!(
        process_ops(&m)[1],
        UCommand::Load { ptr: p, .. } if p == ptr(0)
    ));
    let overflow = run(
        "spawn p\np mmap a 4K\np load a+0x7fff_ffff_ffff_fff0 8\n",
        &mut Answering::plain(),
    );
    assert_eq!(overflow.failures.len(), 1);
    assert!(
        overflow.failures[0]
            .message
            .starts_with("pointer `a+0x7ffffffffffffff0` (a = 0x10000000) cannot be evaluated: "),
        "{:?}",
        overflow.failures
    );
}

#[test]
fn a_process_that_never_existed_gets_esrch_from_the_runner() {
    // `fork` fails with ENOMEM: `q` names no process. Its commands are
    // answered ESRCH without the machine; a peektags of it likewise.
    let mut m = Answering::new(|op, _| match op {
        Op::Process {
            command: UCommand::Fork,
            ..
        } => Some(Reply::new(Outcome::Error(Errno::NoMem))),
        _ => None,
    });
    let report = run(
        "spawn p\np mmap a 4K\np fork q => error ENOMEM\nq load a 8 => error ESRCH\n\
         q exit\np peektags q a 1 => error ESRCH\nq yield => ok\nexpect q tags a 16 == 0\n",
        &mut m,
    );
    assert_eq!(
        lines(&report),
        [
            (7, "expected ok, got error ESRCH"),
            (
                8,
                "expected q tags a 0x10 == 0, got no process `q` (its spawn or fork failed)"
            ),
        ]
    );
    // spawn, mmap, fork: nothing of `q` reached the machine.
    assert_eq!(m.double.log.len(), 3);
}

#[test]
fn outcomes_and_their_failure_messages() {
    let mut m = Answering::new(|op, _| match op {
        Op::Process {
            command: UCommand::Store { ptr, .. },
            ..
        } => Some(Reply::new(Outcome::Fault(Fault {
            code: FaultCode::SegvMteSerr,
            // Hardware reports the pointer itself; Linux strips the tag.
            addr: Some(ptr.with_tag(Tag::default())),
        }))),
        _ => None,
    });
    let report = run(
        "spawn p\np mmap a 4K prot=r,w,mte\n\
         p load a 8 => value 0x0\n\
         p load a 8 => value 0\n\
         p load a 8 => value 0x42\n\
         p store a+0x40#3 8 1 => fault SEGV_MTESERR addr=a+0x40#3\n\
         p store a+0x40#3 8 1 => fault SEGV_MTESERR addr=a+0x50\n\
         p store a#3 8 1 => fault SEGV_MTESERR\n\
         p store a#3 8 1 => ok\n\
         p write-fd a 64 => ok\n\
         p write-fd a 64 => ok 64\n\
         p write-fd a 64 => ok 48\n\
         p irg t a => tag-in 0x0020\n\
         p irg t a => tag-in 0xffdf\n\
         p ldg a => tag 0\n\
         p store a 8 1\n",
        &mut m,
    );
    assert_eq!(
        lines(&report),
        [
            (5, "expected value 0x42, got value 0x0"),
            (
                7,
                "expected fault SEGV_MTESERR addr=0x10000050, got fault SEGV_MTESERR addr=0x10000040"
            ),
            (9, "expected ok, got fault SEGV_MTESERR addr=0x10000000"),
            (12, "expected ok 48, got ok 64"),
            (14, "expected tag-in 0xffdf, got tag 5"),
        ]
    );
}

#[test]
fn an_expected_fault_address_reads_the_bindings_before_the_line_binds() {
    // `p addg a a 16 0 => fault ... addr=a`: `a` in the outcome is the old
    // `a`, as the parser resolves it (uses before the line's binding).
    let mut m = Answering::new(|op, _| match op {
        Op::Process {
            command: UCommand::Addg { ptr, offset, .. },
            ..
        } => Some(Reply::binding(
            Outcome::Fault(Fault {
                code: FaultCode::SegvAccErr,
                addr: Some(*ptr),
            }),
            Bound::Pointer(ptr.checked_add(offset.bytes()).unwrap()),
        )),
        _ => None,
    });
    let report = run(
        "spawn p\np mmap a 4K\np addg a a 16 0 => fault SEGV_ACCERR addr=a\n\
         p load a 8\n",
        &mut m,
    );
    assert_eq!(lines(&report), []);
    // ... and the binding still happened.
    assert!(matches!(
        process_ops(&m)[2],
        UCommand::Load { ptr: p, .. } if p == ptr(0x1000_0010)
    ));
}

#[test]
fn lowering_carries_every_operand() {
    let mut m = Answering::plain();
    let report = run(
        "spawn p\np prctl tagged-addr=on tcf=sync include=0xfffe\n\
         p mmap a 8K prot=r,w,mte map=shared,shm,populate,fixed=0x4000_0000\n\
         p irg t a exclude=0x3\np addg u a 32 2\np poketags p a 1,2\np settag a 64\n\
         p stz2g a\np mprotect a 4K prot=r\np madvise a 4K pageout\nreclaim 7\n\
         p store a 16 0x1_0000_0000_0000_0000\n",
        &mut m,
    );
    assert_eq!(lines(&report), []);
    let ops = process_ops(&m);
    assert_eq!(
        ops[0],
        UCommand::Prctl(uapi::PrctlRequest {
            tagged_addr: Some(true),
            tcf: Some(mte::CheckMode::Sync),
            include: Some(TagMask::from_bits(0xfffe)),
            store_only: None,
        })
    );
    let UCommand::Mmap { len, prot, flags } = &ops[1] else {
        panic!("{:?}", ops[1])
    };
    assert_eq!(*len, 0x2000);
    assert!(prot.mte && prot.read && prot.write && !prot.exec);
    assert_eq!(
        (flags.sharing, flags.backing, flags.populate, flags.fixed),
        (
            uapi::Sharing::Shared,
            uapi::Backing::Shm,
            true,
            Some(ptr(0x4000_0000))
        )
    );
    assert_eq!(
        ops[2],
        UCommand::Irg {
            ptr: ptr(0x1000_0000),
            exclude: TagMask::from_bits(3)
        }
    );
    assert!(matches!(
        &ops[3],
        UCommand::Addg { ptr: p, offset, tag_offset }
            if *p == ptr(0x1000_0000) && offset.bytes() == 32 && tag_offset.steps() == 2
    ));
    assert_eq!(
        ops[4],
        UCommand::PokeTags {
            target: Pid(1),
            ptr: ptr(0x1000_0000),
            tags: vec![Tag::new(1).unwrap(), Tag::new(2).unwrap()],
        }
    );
    assert_eq!(
        ops[5],
        UCommand::SetTag {
            ptr: ptr(0x1000_0000),
            len: 64
        }
    );
    assert!(matches!(
        ops[6],
        UCommand::StoreTag {
            op: mte::TagStoreOp::Stz2g,
            ..
        }
    ));
    assert!(matches!(
        ops[8],
        UCommand::Madvise {
            advice: uapi::Advice::PageOut,
            ..
        }
    ));
    assert!(m.double.log.contains(&Op::Reclaim { pages: 7 }));
    assert!(matches!(
        ops.last(),
        Some(UCommand::Store { value, size: AccessSize::B16, .. }) if *value == 1 << 64
    ));
}

#[test]
fn expectations_observe_the_machine() {
    let mut m = Answering::plain();
    m.double.counters.insert(Counter::TagStorageReserved, 3);
    m.double.tags = Some(vec![
        Tag::new(7).unwrap(),
        Tag::new(7).unwrap(),
        Tag::new(2).unwrap(),
    ]);
    m.double.pages.insert(PageState::Tagged, true);
    m.double.violations = vec![uapi::Violation::new(
        uapi::Invariant::ReservedBlocks,
        "block 3 refcount 2, 1 tagged page",
    )];
    let report = run(
        "spawn p\np mmap a 4K\n\
         expect stat tag_storage.reserved == 3\n\
         expect stat tag_storage.reserved >= 4\n\
         expect stat fault.cow >= 1\n\
         expect invariants\n\
         expect p tags a 32 == 7\n\
         expect p tags a+16 48 == 7\n\
         expect p tags a 0 == 9\n\
         expect p page a tagged\n\
         expect p page a not tagged\n\
         expect p page a in-tag-storage\n\
         expect p page a not in-tag-storage\n",
        &mut m,
    );
    assert_eq!(
        lines(&report),
        [
            (4, "expected tag_storage.reserved >= 4, got 3"),
            (
                5,
                "expected fault.cow >= 1, got nothing: the machine does not keep fault.cow"
            ),
            (
                6,
                "expected invariants to hold, got 1 violated: invariant 3: block 3 refcount 2, \
                 1 tagged page"
            ),
            (
                8,
                "expected p tags a+0x10 0x30 == 7, got tag 2 at 0x10000030"
            ),
            (11, "expected p page a not tagged, got tagged"),
            (12, "expected p page a in-tag-storage, got tagged"),
        ]
    );
    // A counter observed without a comparison always holds; the verbose
    // trace shows its value, and the verdict of a comparison shows it too.
    let verbose = RunOptions {
        verbose: true,
        ..RunOptions::default()
    };
    let report = run_with(
        "spawn p\nexpect stat tag_storage.reserved\nexpect stat tag_storage.reserved == 3\n\
         expect stat tag_storage.reserved < 3\n",
        &mut m,
        &verbose,
    );
    assert_eq!(
        lines(&report),
        [(4, "expected tag_storage.reserved < 3, got 3")]
    );
    let results: Vec<&str> = report.steps.iter().map(|s| s.result.as_str()).collect();
    assert_eq!(results, ["ok", "3", "holds (3)", "fails (got 3)"]);
    // The machine's replies for `tags` covered 32 bytes with 3 granules;
    // fewer than asked is a failure too.
    m.double.tags = Some(vec![Tag::new(7).unwrap()]);
    m.double.pages.clear();
    let report = run(
        "spawn p\np mmap a 4K\nexpect p tags a 32 == 7\nexpect p page a tagged\n",
        &mut m,
    );
    assert_eq!(
        lines(&report),
        [
            (
                3,
                "expected p tags a 0x20 == 7, got tags for only 1 of its 2 granules"
            ),
            (
                4,
                "expected p page a tagged, got nothing: the machine does not model page tables"
            ),
        ]
    );
    m.double.tags = None;
    let report = run("spawn p\np mmap a 4K\nexpect p tags a 32 == 7\n", &mut m);
    assert_eq!(
        lines(&report),
        [(3, "expected p tags a 0x20 == 7, got unmapped memory")]
    );
    // Observations never ran an op.
    assert!(m.double.log.iter().all(|op| matches!(
        op,
        Op::Spawn
            | Op::Process {
                command: UCommand::Mmap { .. },
                ..
            }
    )));
}

#[test]
fn verbose_steps_show_the_line_as_written_and_its_result() {
    let mut m = Answering::plain();
    let options = RunOptions {
        verbose: true,
        ..RunOptions::default()
    };
    let report = run_with(
        "spawn p  # the process\np mmap a 4K\n\np load a#7 8 => value 0x0\nexpect invariants\n",
        &mut m,
        &options,
    );
    let steps: Vec<String> = report.steps.iter().map(Step::render).collect();
    assert_eq!(
        steps,
        [
            "  1: spawn p => ok",
            "  2: p mmap a 4K => ok",
            "  4: p load a#7 8 => value 0x0",
            "  5: expect invariants => holds",
        ]
    );
    assert_eq!(
        report.render("t.mte", true),
        "  1: spawn p => ok\n  2: p mmap a 4K => ok\n  4: p load a#7 8 => value 0x0\n\
         \x20 5: expect invariants => holds\nPASS t.mte\n"
    );
    // Without the source, the process and command word.
    let script = script("spawn p\np yield\n");
    let report = run_script(&script, &mut Answering::plain(), &options);
    assert_eq!(report.steps[1].render(), "  2: p yield => ok");
    assert_eq!(report.render("t.mte", false), "PASS t.mte\n");
}

const BLOCK: &str = "platform cpus=3\nspawn p\np mmap a 4K\nparallel\n  p load a 8 => value 0\n\
                     \x20 p store a+8 8 1 => ok\n  p mmap b 4K\nend\np load b 8\n";

#[test]
fn parallel_blocks_run_with_a_recorded_seeded_schedule() {
    let mut m = Answering::plain();
    let report = run(BLOCK, &mut m);
    assert_eq!(lines(&report), []);
    // Three CPUs, run to completion one at a time: two decisions.
    let schedule = report.schedule.clone().expect("a block ran");
    assert_eq!(schedule.len(), 2);
    let order = m.double.orders[0].clone();
    // Each decision names its CPU unless it is the lowest runnable one
    // (nobody ran before, or the one that ran finished): `Stay`.
    let lowest_left = |i: usize| (0..3).find(|c| !order[..i].contains(c)).unwrap();
    for (i, choice) in schedule.iter().enumerate() {
        let expected = if order[i] == lowest_left(i) {
            sched::Choice::Stay
        } else {
            sched::Choice::Cpu(sched::CpuId::new(order[i] as u32))
        };
        assert_eq!(choice, expected, "decision {i} of {order:?}");
    }
    // The block's binding is visible after `end`.
    assert!(matches!(
        process_ops(&m).last(),
        Some(UCommand::Load { ptr: p, .. }) if *p == ptr(0x2000_0000)
    ));
    // Same seed, same schedule; the recorded schedule replays exactly.
    let again = run(BLOCK, &mut Answering::plain());
    assert_eq!(again.schedule, report.schedule);
    let replayed = run_with(
        BLOCK,
        &mut Answering::plain(),
        &RunOptions {
            schedule: Some(schedule.clone()),
            ..RunOptions::default()
        },
    );
    assert_eq!(
        (replayed.status(), replayed.schedule),
        (Status::Pass, Some(schedule))
    );
    // Some schedule seed among a few orders the block differently (3! orders).
    let orders: std::collections::BTreeSet<Vec<usize>> = (0..16)
        .map(|seed| {
            let mut m = Answering::plain();
            run_with(
                BLOCK,
                &mut m,
                &RunOptions {
                    schedule_seed: Some(seed),
                    ..RunOptions::default()
                },
            );
            m.double.orders[0].clone()
        })
        .collect();
    assert!(orders.len() > 1, "{orders:?}");
}

#[test]
fn a_schedule_that_does_not_fit_is_a_run_error() {
    let replay = |text: &str| {
        run_with(
            BLOCK,
            &mut Answering::plain(),
            &RunOptions {
                schedule: Some(text.parse().unwrap()),
                ..RunOptions::default()
            },
        )
    };
    // Too short: the second decision has no entry.
    let short = replay("0");
    assert_eq!(short.status(), Status::Error);
    assert!(
        short
            .render_error("t.mte")
            .unwrap()
            .starts_with("t.mte: schedule: schedule ended before decision 2"),
        "{:?}",
        short.error
    );
    // Not runnable: CPU 0 twice.
    assert!(matches!(
        replay("0.0").error,
        Some(RunError::Schedule(sched::ChooseError::NotRunnable {
            decision: 2,
            ..
        }))
    ));
    // Left over at the end.
    assert!(matches!(
        replay("0.1.0").error,
        Some(RunError::Schedule(sched::ChooseError::Unused {
            used: 2,
            len: 3
        }))
    ));
    // A file without blocks takes only the empty schedule.
    let none = run_with(
        "spawn p\n",
        &mut Answering::plain(),
        &RunOptions {
            schedule: Some(Schedule::new()),
            ..RunOptions::default()
        },
    );
    assert_eq!(
        (none.status(), none.schedule),
        (Status::Pass, Some(Schedule::new()))
    );
    // The run stops at the error: the load after `end` never ran.
    let mut m = Answering::plain();
    run_with(
        BLOCK,
        &mut m,
        &RunOptions {
            schedule: Some("1".parse().unwrap()),
            ..RunOptions::default()
        },
    );
    assert!(!matches!(
        process_ops(&m).last(),
        Some(UCommand::Load { .. })
    ));
}

#[test]
fn a_machine_that_cannot_finish_a_block_fails_it_and_stops_the_run() {
    let mut m = Answering::plain();
    m.double.parallel_error = Some(MachineError::Schedule(sched::SchedError::StepLimit {
        limit: 7,
        unfinished: vec![sched::CpuId::new(0), sched::CpuId::new(1)],
    }));
    let report = run(&format!("{BLOCK}expect invariants\n"), &mut m);
    assert_eq!(
        lines(&report),
        [(
            4,
            "expected the parallel block to complete, got step limit: 7 switch points reached; \
             unfinished: cpu0, cpu1"
        )]
    );
    assert_eq!(report.status(), Status::Fail);
}

#[test]
fn outcomes_inside_a_block_are_checked_per_line() {
    let mut m = Answering::new(|op, _| match op {
        Op::Process {
            command: UCommand::Store { .. },
            ..
        } => Some(Reply::new(Outcome::Error(Errno::Fault))),
        _ => None,
    });
    let report = run(BLOCK, &mut m);
    assert_eq!(lines(&report), [(6, "expected ok, got error EFAULT")]);
    assert_eq!(report.commands, 6);
}

#[test]
fn final_counters_are_those_the_machine_keeps_in_model_order() {
    let mut m = Answering::plain();
    m.double.counters.insert(Counter::TcfSync, 2);
    m.double.counters.insert(Counter::MemPages, 16384);
    let report = run("spawn p\n", &mut m);
    assert_eq!(
        report.counters,
        [(Counter::MemPages, 16384), (Counter::TcfSync, 2)]
    );
}

#[test]
fn run_source_streams_and_refuses_a_malformed_file_whole() {
    let factory_seed = std::cell::Cell::new(None);
    let make = |platform: &Platform| -> Result<Box<dyn Machine>, String> {
        factory_seed.set(Some(platform.settings().seed));
        Ok(Box::new(Answering::plain()))
    };
    let options = RunOptions {
        seed: Some(99),
        ..RunOptions::default()
    };
    let result = run_source(
        "ok.mte",
        b"platform seed=7 cpus=2\nspawn p\np yield => error EINVAL\n",
        &options,
        make,
    );
    let FileResult::Ran(report) = result else {
        panic!("{result:?}")
    };
    assert_eq!(lines(&report), [(3, "expected error EINVAL, got ok")]);
    assert_eq!(
        factory_seed.get(),
        Some(99),
        "--seed replaces the platform's"
    );
    // Malformed at line 4, after three lines that would run.
    let result = run_source(
        "bad-input.mte",
        b"spawn p\np mmap a 4K prot=r,w,mte\np yield\np load a+ 8 => value 0x0\n",
        &RunOptions::default(),
        |_: &Platform| -> Result<Box<dyn Machine>, String> { Ok(Box::new(Answering::plain())) },
    );
    let FileResult::Malformed(e) = result else {
        panic!("{result:?}")
    };
    assert_eq!((e.line(), e.column()), (4, 9));
    // No machine: malformed still wins, else CannotRun.
    let none = |_: &Platform| -> Result<Box<dyn Machine>, &str> { Err("no machine here") };
    assert!(matches!(
        run_source("b.mte", b"spawn p\np lod a\n", &RunOptions::default(), none),
        FileResult::Malformed(_)
    ));
    let result = run_source("c.mte", b"spawn p\n", &RunOptions::default(), none);
    assert!(matches!(&result, FileResult::CannotRun(why) if why == "no machine here"));
    assert_eq!(result.status(), Status::Error);
    // The empty file runs nothing and passes.
    let result = run_source("e.mte", b"", &RunOptions::default(), make);
    assert!(matches!(&result, FileResult::Ran(r) if r.passed() && r.commands == 0));
}

#[test]
fn check_invariants_fails_every_command_line_after_which_they_break() {
    let src = "spawn p\np mmap a 4K\nexpect p page a tagged\np load a 8\n";
    let mut m = Answering::plain();
    m.double.pages.insert(PageState::Tagged, true);
    m.double.violations = vec![uapi::Violation::new(
        uapi::Invariant::FrameStates,
        "frame 7 in two states",
    )];
    assert!(run(src, &mut m).failures.is_empty(), "off by default");
    let options = RunOptions {
        check_invariants: true,
        ..RunOptions::default()
    };
    let report = run_with(src, &mut m, &options);
    let message = "expected invariants to hold after this line, got 1 violated: \
                   invariant 4: frame 7 in two states";
    // Commands only: an expectation changes nothing.
    assert_eq!(lines(&report), [(1, message), (2, message), (4, message)]);
}

#[test]
fn a_failure_in_or_after_a_block_prints_the_schedule() {
    // docs/language.md, "Concurrency": the schedule is part of the failure.
    let report = run(
        &format!("{BLOCK}p load b 8 => value 7\n"),
        &mut Answering::plain(),
    );
    assert_eq!(report.status(), Status::Fail);
    let schedule = report.schedule.clone().unwrap();
    assert_eq!(
        report.render("t.mte", false),
        format!("  schedule: {schedule}\nFAIL t.mte:10: expected value 0x7, got value 0x0\n")
    );
    // A failure before any block does not.
    let early = BLOCK.replace("p mmap a 4K\n", "p mmap a 4K => error EINVAL\n");
    let before = run(&early, &mut Answering::plain());
    assert_eq!(before.status(), Status::Fail);
    assert!(!before.render("t.mte", false).contains("schedule"));
    // The digest tells runs with different results apart.
    let other = run(
        &format!("{BLOCK}p load b 8 => value 7\n"),
        &mut Answering::plain(),
    );
    assert_eq!(other.digest, report.digest);
    assert_ne!(run(BLOCK, &mut Answering::plain()).digest, report.digest);
}
