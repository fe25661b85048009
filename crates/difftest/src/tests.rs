//! Unit tests of the fuzz programs: generation, rendering, lowering,
//! pruning, reproducers.

use super::*;
use lang::ast::Stmt;
use mte::Tag;
use platform::Platform;
use scenario::run::lower::Lowered;
use uapi::{Command as UCommand, Machine, Op, Outcome, Reply};

const POLICIES: [Design; 3] = [Design::NONE, Design::STATIC, Design::DYNAMIC];

fn program(policy: Design, steps: usize, seed: u64) -> Program {
    generate(&GenConfig::new(policy, steps), seed)
}

fn reference(platform: &Platform) -> Box<dyn Machine> {
    scenario::machine::make_machine(scenario::machine::MachineKind::Reference, platform).unwrap()
}

#[test]
fn generation_is_a_function_of_the_seed() {
    for policy in POLICIES {
        let a = program(policy, 200, 7).render();
        assert_eq!(a, program(policy, 200, 7).render());
        assert_ne!(a, program(policy, 200, 8).render());
        assert_eq!(a.lines().count(), 201, "platform line and 200 steps");
        assert!(a.starts_with("platform memory="));
        assert!(a.contains(&format!("tag-storage={}", policy.name())));
    }
}

/// Every rendered program parses, on the generator's platform, to one
/// command per step: what runs in lockstep is what its file runs.
#[test]
fn rendered_programs_parse_to_one_command_per_step() {
    for policy in POLICIES {
        for seed in 0..6 {
            let program = program(policy, 250, seed);
            let text = program.render();
            let script = lang::parse("gen.mte", text.as_bytes())
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(script.platform_spec(), program.platform.spec());
            assert_eq!(script.stmts.len(), program.steps.len());
            assert!(script.stmts.iter().all(|s| matches!(s, Stmt::Command(_))));
            assert_eq!(program.commands().unwrap().len(), program.steps.len());
        }
    }
}

/// Runs `program` on `machine` alone the way lockstep runs it, giving each
/// step's reply (`None` for a step answered without the machine) to `see`.
fn run_alone(program: &Program, machine: &mut dyn Machine, mut see: impl FnMut(&Op, &Reply)) {
    let mut env = Env::new();
    for command in program.commands().unwrap() {
        let reply = match env.lower(&command).expect("pointers evaluate") {
            Lowered::Op(op) => {
                let reply = machine.run(&op);
                see(&op, &reply);
                Some(reply)
            }
            Lowered::NoProcess => None,
        };
        env.bind(&command, reply.as_ref());
    }
}

#[test]
fn programs_are_mostly_meaningful() {
    // The generator's model of bindings and tags should make most accesses
    // succeed on the reference; a generator that only produced faults would
    // test fault paths alone.
    let (mut accesses, mut succeeded) = (0, 0);
    for seed in 0..4 {
        let program = program(Design::DYNAMIC, 300, seed);
        let platform = Platform::from_spec(&program.platform.spec()).unwrap();
        let mut machine = reference(&platform);
        run_alone(&program, &mut *machine, |op, reply| {
            if let Op::Process {
                command: UCommand::Load { .. } | UCommand::Store { .. },
                ..
            } = op
            {
                accesses += 1;
                if matches!(reply.outcome, Outcome::Value(_) | Outcome::Ok) {
                    succeeded += 1;
                }
            }
        });
    }
    assert!(accesses > 100, "{accesses} accesses");
    assert!(
        succeeded * 2 > accesses,
        "{succeeded} of {accesses} accesses succeeded"
    );
}

#[test]
fn pruning_drops_the_users_of_a_removed_binding() {
    let text = |p: &Program| p.render().lines().skip(1).collect::<Vec<_>>().join("\n");
    let map = PtrName::Map(0);
    let mut program = Program {
        platform: program(Design::DYNAMIC, 1, 0).platform,
        steps: vec![
            Step::Spawn(ProcName(0)),
            Step::Process {
                proc: ProcName(0),
                cmd: Cmd::Irg {
                    name: 0,
                    ptr: PtrRef::at(map, 0x10),
                    exclude: mte::TagMask::EMPTY,
                },
            },
            Step::Process {
                proc: ProcName(0),
                cmd: Cmd::StoreTag {
                    op: mte::TagStoreOp::Stg,
                    ptr: PtrRef::at(PtrName::Tagged(0), 0),
                },
            },
            Step::Process {
                proc: ProcName(1),
                cmd: Cmd::Yield,
            },
            Step::Compact,
        ],
    };
    // `m0` is bound nowhere, so the irg and the stg through `t0` go; `p1`
    // is bound nowhere, so its yield goes.
    assert_eq!(program.prune(), 3);
    assert_eq!(text(&program), "spawn p0\ncompact");
}

#[test]
fn steps_render_in_the_scenario_syntax() {
    let p0 = ProcName(0);
    let step = |cmd| Step::Process { proc: p0, cmd };
    let ptr = PtrRef {
        base: PtrName::Map(3),
        offset: 0x20,
        tag: Tag::new(5),
    };
    assert_eq!(
        step(Cmd::Mmap {
            name: 3,
            len: 0x2000,
            prot: uapi::Prot {
                mte: true,
                ..uapi::Prot::READ_WRITE
            },
            sharing: uapi::Sharing::Shared,
            backing: uapi::Backing::Shm,
            populate: true,
        })
        .to_string(),
        "p0 mmap m3 0x2000 prot=r,w,mte map=shared,shm,populate"
    );
    assert_eq!(
        step(Cmd::Store {
            ptr,
            size: uapi::AccessSize::B8,
            value: 0x42
        })
        .to_string(),
        "p0 store m3+0x20#5 8 0x42"
    );
    assert_eq!(
        step(Cmd::PokeTags {
            target: ProcName(1),
            ptr: PtrRef::at(PtrName::Tagged(2), 0),
            tags: vec![Tag::new(1).unwrap(), Tag::new(15).unwrap()],
        })
        .to_string(),
        "p0 poketags p1 t2 1,15"
    );
    assert_eq!(
        step(Cmd::Prctl(uapi::PrctlRequest {
            tagged_addr: Some(true),
            tcf: Some(mte::CheckMode::Asymm),
            include: Some(mte::TagMask::from_bits(0xfffe)),
            store_only: Some(false),
        }))
        .to_string(),
        "p0 prctl tagged-addr=on tcf=asymm include=0xfffe store-only=off"
    );
}

#[test]
fn a_reproducer_carries_the_references_outcome_on_the_failing_line() {
    let program = program(Design::DYNAMIC, 40, 3);
    let failing = program
        .steps
        .iter()
        .position(|s| s.word() == "load")
        .expect("a load among 40 steps");
    let failure = Failure {
        step: failing,
        word: "load",
        kind: FailureKind::Divergence {
            under_test: Reply::new(Outcome::Value(1)),
            reference: Reply::new(Outcome::Value(0x5a)),
        },
    };
    let mut cut = program.clone();
    cut.steps.truncate(failing + 1);
    let provenance = Provenance {
        seed: 9,
        policy: Design::DYNAMIC,
        program: 2,
        original_len: 40,
    };
    let text = reproducer(&cut, &failure, &provenance);
    assert!(
        text.starts_with(
            "# mtesim fuzz reproducer: --seed 9 --set tag-storage=dynamic, program 2\n"
        )
    );
    assert!(text.contains(&format!(
        "# original length 40 steps, shrunk to {} steps\n",
        failing + 1
    )));
    let last = text.lines().last().unwrap();
    assert!(last.ends_with(" => value 0x5a"), "{last}");
    assert!(lang::parse("r.mte", text.as_bytes()).is_ok());
}

/// THP platforms are drawn (thp=always and thp=madvise), with 2M and 4M
/// mappings and, under madvise, `madvise hugepage` over them.
#[test]
fn some_programs_use_transparent_huge_pages() {
    let programs: Vec<String> = (0..24)
        .map(|seed| program(Design::DYNAMIC, 300, seed).render())
        .collect();
    let always = programs.iter().filter(|p| p.contains("thp=always")).count();
    let madvise = programs
        .iter()
        .filter(|p| p.contains("thp=madvise"))
        .count();
    assert!(always > 0 && madvise > 0, "{always} {madvise}");
    assert!(
        programs
            .iter()
            .any(|p| p.contains("thp=madvise") && p.contains("0x200000 hugepage")),
        "madvise hugepage over a 2M mapping"
    );
    assert!(
        programs
            .iter()
            .any(|p| p.contains("thp=always") && p.contains(" 0x400000 prot=")),
        "4M mappings under thp=always"
    );
}

/// The generated platforms often have swap and the programs page memory
/// out and back in on the kernel (madvise pageout is among the advices):
/// the differential fuzzer exercises swap.
#[test]
fn programs_swap_on_the_kernel() {
    let (mut with_swap, mut swapped_out, mut swapped_in) = (0, 0, 0);
    for seed in 0..8 {
        let program = program(Design::DYNAMIC, 300, seed);
        if program.platform.swap > 0 {
            with_swap += 1;
            assert!(program.render().contains(" swap="));
        }
        let platform = Platform::from_spec(&program.platform.spec()).unwrap();
        let mut machine =
            scenario::machine::make_machine(scenario::machine::MachineKind::Kernel, &platform)
                .unwrap();
        run_alone(&program, &mut *machine, |_, _| {});
        swapped_out += machine.counter(uapi::Counter::SwapOut).unwrap();
        swapped_in += machine.counter(uapi::Counter::SwapIn).unwrap();
    }
    assert!(with_swap >= 4, "{with_swap} of 8 platforms have swap");
    assert!(
        swapped_out > 0 && swapped_in > 0,
        "out {swapped_out}, in {swapped_in}"
    );
}

/// The generated programs' `compact` steps really move pages on the kernel,
/// tagged ones among them (their tags copied by `Memory::migrate_block`),
/// under both tag storage designs that tag: the differential fuzzer
/// exercises the migration of a tagged page.
#[test]
fn compact_moves_tagged_pages_on_the_kernel() {
    use uapi::event::{Event, MigrateReason};
    for policy in [Design::DYNAMIC, Design::STATIC] {
        let (mut moved, mut tagged) = (0, 0);
        for seed in 0..8 {
            let program = program(policy, 300, seed);
            let platform = Platform::from_spec(&program.platform.spec()).unwrap();
            let mut kernel = kernel::Kernel::new(&platform).unwrap();
            kernel.set_trace(true);
            let mut env = Env::new();
            for command in program.commands().unwrap() {
                let reply = match env.lower(&command).expect("pointers evaluate") {
                    Lowered::Op(op) => Some(kernel.run(&op)),
                    Lowered::NoProcess => None,
                };
                env.bind(&command, reply.as_ref());
                for event in kernel.take_events() {
                    if let Event::Migrate {
                        to,
                        reason: MigrateReason::Compaction,
                        ..
                    } = event
                    {
                        moved += 1;
                        tagged += u32::from(kernel.memory().page_mte_tagged(to));
                    }
                }
            }
        }
        assert!(
            tagged >= 8 && moved > tagged,
            "{policy:?}: {moved} pages compacted, {tagged} tagged"
        );
    }
}

/// The reference, except that a `parallel` block runs its ops one after
/// the other in `order` (indexes into the block's ops), and `tamper`
/// replaces the outcome of one op of every block: a machine under test
/// whose interleavings are chosen by hand.
struct Permuting {
    inner: Box<dyn Machine>,
    order: Vec<usize>,
    tamper: Option<(usize, Outcome)>,
}

impl Machine for Permuting {
    fn run(&mut self, op: &Op) -> Reply {
        self.inner.run(op)
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        _chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, uapi::MachineError> {
        let mut replies = vec![None; ops.len()];
        for &i in self.order.iter().filter(|&&i| i < ops.len()) {
            replies[i] = Some(self.inner.run(&ops[i]));
        }
        if let Some((i, outcome)) = &self.tamper
            && let Some(Some(reply)) = replies.get_mut(*i)
        {
            reply.outcome = outcome.clone();
        }
        Ok(replies.into_iter().map(|r| r.unwrap()).collect())
    }

    fn counter(&self, counter: uapi::Counter) -> Option<u64> {
        self.inner.counter(counter)
    }

    fn tags(&self, pid: uapi::Pid, ptr: mte::TaggedPtr, len: u64) -> Option<Vec<Tag>> {
        self.inner.tags(pid, ptr, len)
    }

    fn page_state(
        &self,
        pid: uapi::Pid,
        ptr: mte::TaggedPtr,
        state: uapi::PageState,
    ) -> Option<bool> {
        self.inner.page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        self.inner.invariant_violations()
    }
}

fn plain_platform() -> ProgramPlatform {
    ProgramPlatform {
        memory: 8 << 20,
        policy: Design::DYNAMIC,
        block_size: None,
        data: None,
        thp: platform::Thp::Never,
        swap: 0,
        seed: 0,
        mistakes: platform::Mistakes::NONE,
        pcp: false,
        thp_sizes: platform::ThpSizes::NONE,
        free_list_order: platform::FreeListOrder::Address,
    }
}

const P0: ProcName = ProcName(0);
const M0: PtrRef = PtrRef::at(PtrName::Map(0), 0);

fn on_p0(cmd: Cmd) -> Step {
    Step::Process { proc: P0, cmd }
}

fn store(value: u128) -> Step {
    on_p0(Cmd::Store {
        ptr: M0,
        size: uapi::AccessSize::B8,
        value,
    })
}

fn load() -> Step {
    on_p0(Cmd::Load {
        ptr: M0,
        size: uapi::AccessSize::B8,
    })
}

/// `spawn p0`, a page mapped at `m0`, the block, then `after`.
fn block_program(block: Vec<Step>, after: Vec<Step>) -> Program {
    let mut steps = vec![
        Step::Spawn(P0),
        on_p0(Cmd::Mmap {
            name: 0,
            len: 0x1000,
            prot: uapi::Prot::READ_WRITE,
            sharing: uapi::Sharing::Private,
            backing: uapi::Backing::Anon,
            populate: false,
        }),
        Step::Parallel(Block {
            steps: block,
            schedule: BlockSchedule::Seed(0),
        }),
    ];
    steps.extend(after);
    Program {
        platform: plain_platform(),
        steps,
    }
}

fn run_permuting(
    program: &Program,
    order: &[usize],
    tamper: Option<(usize, Outcome)>,
) -> ProgramRun {
    let order = order.to_vec();
    let under_test = move |platform: &Platform| -> Result<Box<dyn Machine>, _> {
        Ok(Box::new(Permuting {
            inner: reference(platform),
            order: order.clone(),
            tamper: tamper.clone(),
        }) as Box<dyn Machine>)
    };
    run_program(program, &under_test, &reference_factory).unwrap()
}

fn reference_factory(
    platform: &Platform,
) -> Result<Box<dyn Machine>, scenario::machine::MachineUnavailable> {
    Ok(reference(platform))
}

/// A store and a load of one address: the load's value says which ran
/// first, and exactly one order explains each of the two replies.
#[test]
fn a_block_is_explained_by_the_one_order_that_gives_its_replies() {
    let program = block_program(vec![store(7), load()], vec![load()]);
    let text = program.render();
    assert!(
        text.contains("parallel\n  p0 store m0 8 0x7\n  p0 load m0 8\nend\n"),
        "{text}"
    );
    // Line order: the load sees the store.
    let run = run_permuting(&program, &[0, 1], None);
    assert_eq!(run.failure, None);
    assert_eq!((run.raced_as_written, run.raced_reordered), (1, 0));
    // The other order: the load sees 0, which only the order 1, 0 gives.
    let run = run_permuting(&program, &[1, 0], None);
    assert_eq!(run.failure, None);
    assert_eq!((run.raced_as_written, run.raced_reordered), (0, 1));
    assert_eq!((run.steps, run.ops, run.max_candidates), (4, 5, 1));
}

/// A load value that no order gives: every order is listed with its first
/// differing reply.
#[test]
fn a_block_no_order_explains_is_reported_with_every_order() {
    let program = block_program(vec![store(7), load()], Vec::new());
    let run = run_permuting(&program, &[0, 1], Some((1, Outcome::Value(5))));
    let failure = run.failure.expect("not linearizable");
    assert_eq!((failure.step, failure.word), (2, "parallel"));
    let FailureKind::NotLinearizable(block) = &failure.kind else {
        panic!("{failure}");
    };
    assert_eq!(
        block.under_test[1].as_ref().unwrap().outcome,
        Outcome::Value(5)
    );
    assert_eq!(block.candidates, 1);
    let orders: Vec<(Vec<usize>, Outcome)> = block
        .orders
        .iter()
        .map(|o| {
            (
                o.prefix.clone(),
                o.reference.clone().unwrap().unwrap().outcome,
            )
        })
        .collect();
    assert_eq!(
        orders,
        vec![
            (vec![0, 1], Outcome::Value(7)),
            // The load first: it differs at once, whatever follows.
            (vec![1], Outcome::Value(0)),
        ]
    );
    let text = failure.to_string();
    assert!(text.contains("line 1: p0 load m0 8 => value 0x5"), "{text}");
    assert!(text.contains("order 0,1: line 1 => value 0x7"), "{text}");
    assert!(text.contains("order 1,...: line 1 => value 0x0"), "{text}");
    assert_eq!(failure.class(), FailureClass::Divergence);
}

/// Two stores to one address reply alike in either order and leave
/// different memory: both states are kept until a later load decides, and
/// a load value neither gives is a divergence.
#[test]
fn orders_with_equal_replies_stay_candidates_until_a_later_step_decides() {
    let program = block_program(vec![store(1), store(2)], vec![load(), load()]);
    for order in [[0, 1], [1, 0]] {
        let run = run_permuting(&program, &order, None);
        assert_eq!(run.failure, None, "order {order:?}");
        assert_eq!(run.max_candidates, 2);
    }
    // A later load of a value neither store wrote.
    let mut tampered = program.clone();
    tampered.steps.push(Step::Parallel(Block {
        steps: vec![load(), load()],
        schedule: BlockSchedule::Seed(1),
    }));
    let run = run_permuting(&tampered, &[0, 1], Some((0, Outcome::Value(9))));
    // The candidates' states went into their orders; the failure still
    // counts them.
    assert!(matches!(
        run.failure.map(|f| f.kind),
        Some(FailureKind::NotLinearizable(block)) if block.candidates == run.max_candidates
    ));
    // Stores of equal values: one state, kept once.
    let same = block_program(vec![store(3), store(3)], vec![load()]);
    assert_eq!(run_permuting(&same, &[1, 0], None).max_candidates, 1);
}

/// A machine under test whose loads in blocks read a value no order
/// gives: the fuzzer finds it, and the reproducer keeps a block with its
/// (replayable) schedule.
#[test]
fn a_block_failure_shrinks_to_a_block_with_its_schedule() {
    let under_test = |platform: &Platform| -> Result<Box<dyn Machine>, _> {
        Ok(Box::new(Permuting {
            inner: reference(platform),
            order: vec![0, 1, 2, 3],
            tamper: Some((0, Outcome::Value(0x5a5a))),
        }) as Box<dyn Machine>)
    };
    let config = FuzzConfig {
        parallel: 40,
        ..FuzzConfig::new(20_000, 3, Design::DYNAMIC)
    };
    let report = fuzz(&config, &under_test, &reference_factory).unwrap();
    assert!(report.blocks > 0);
    let found = report.found.first().expect("a tampered block is found");
    assert_eq!(found.failure.word, "parallel");
    let shrunk = found.shrunk.as_ref().unwrap();
    let last = shrunk.program.steps.last().unwrap();
    assert!(
        matches!(last, Step::Parallel(_)),
        "{}",
        shrunk.program.render()
    );
    assert!(shrunk.program.ops() <= found.original.ops());
    assert!(shrunk.program.replayed_schedules().is_some());
    let text = &found.reproducer;
    assert!(text.contains("\nparallel\n"), "{text}");
    assert!(
        text.contains("# replay: mtesim run fuzz-failure.mte --schedule "),
        "{text}"
    );
    // The reproducer parses, and its blocks are the shrunk program's.
    let script = lang::parse("fuzz-failure.mte", text.as_bytes()).unwrap();
    let blocks = script
        .stmts
        .iter()
        .filter(|s| matches!(s, Stmt::Parallel(_)))
        .count();
    assert_eq!(blocks, shrunk.program.replayed_schedules().unwrap().len());
    // It replays with the schedule of its header: it fails on the machine
    // under test at the block, and passes on the reference.
    let schedule: sched::Schedule = text
        .lines()
        .find_map(|l| l.strip_prefix("# replay: mtesim run fuzz-failure.mte --schedule "))
        .unwrap()
        .parse()
        .unwrap();
    let options = scenario::run::RunOptions {
        schedule: Some(schedule),
        ..scenario::run::RunOptions::default()
    };
    let run = |factory: Factory<'_>| match scenario::run_source(
        "fuzz-failure.mte",
        text.as_bytes(),
        &options,
        factory,
    ) {
        scenario::run::FileResult::Ran(report) => report,
        other => panic!("{other:?}"),
    };
    let on_bug = run(&under_test);
    assert_eq!(on_bug.error, None);
    assert_eq!(on_bug.failures.len(), 1, "{:?}\n{text}", on_bug.failures);
    assert!(run(&reference_factory).passed());
}

/// Programs with blocks render to text that parses back to the same
/// blocks, and pruning keeps blocks well formed.
#[test]
fn programs_with_blocks_round_trip_and_prune() {
    let config = GenConfig {
        parallel: DEFAULT_PARALLEL,
        ..GenConfig::new(Design::DYNAMIC, 300)
    };
    for seed in 0..6 {
        let program = generate(&config, seed);
        let blocks: Vec<&Block> = program
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Parallel(b) => Some(b),
                _ => None,
            })
            .collect();
        assert!(!blocks.is_empty(), "seed {seed}");
        assert!(blocks.iter().all(|b| (2..=4).contains(&b.steps.len())));
        assert_eq!(program.ops(), 300);
        let per_step = program.step_commands().unwrap();
        assert_eq!(per_step.len(), program.steps.len());
        for (step, commands) in program.steps.iter().zip(&per_step) {
            assert_eq!(step.ops(), commands.len());
        }
        // The same steps as without blocks, grouped.
        let flat = generate(&GenConfig::new(Design::DYNAMIC, 300), seed);
        let inner: Vec<Step> = program
            .steps
            .iter()
            .flat_map(|s| s.inner().to_vec())
            .collect();
        assert_eq!(inner, flat.steps);
        // Removing the steps that bind names keeps the rest parseable.
        let mut pruned = program.clone();
        pruned.steps.retain(|s| {
            !matches!(
                s,
                Step::Process {
                    cmd: Cmd::Mmap { .. },
                    ..
                }
            )
        });
        pruned.prune();
        assert!(pruned.step_commands().is_ok());
    }
}
