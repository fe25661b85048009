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
