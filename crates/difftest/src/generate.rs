//! The program generator: random but meaningful programs, deterministic
//! from a seed.
//!
//! Owns [`Weights`] (how often each kind of step is drawn) and
//! [`generate`]. The generator keeps a model of what the program has bound
//! (live processes, their mappings with protection and kind, the tags the
//! program set, pins, `prctl` settings) so that most steps do something:
//! accesses land mostly inside mapped ranges with the tag the program last
//! set there, and sometimes one granule past the end or with a wrong tag.
//! The model is a guide, not an oracle: it need not be exact, since the
//! reference machine decides what is right.
//!
//! Memory pressure: the platform is small (`memory` 8M or 16M, often
//! `tag-storage-data=prefer`, blocks of 4K to 64K) and pins are frequent,
//! so tag storage reservation, migration and their failure paths run. But
//! the reference model does not model running out of memory, so the
//! generator keeps the pages every live process could touch (counted once
//! per process, forks included) under a third of memory: a correct kernel
//! never has to answer `ENOMEM` where the reference succeeds, and no single
//! mapping comes near the commit limit (docs/semantics.md §16). Within that
//! budget, mappings of 2 MiB and more are drawn too, so that the 2 MiB
//! aligned placement of large anonymous and file mappings is compared.
//!
//! Overcommitting programs ([`GenConfig::overcommit`] percent of them,
//! drawn from a stream of their own so that the others are those of
//! earlier versions draw for draw): the budget is memory and a half, plus
//! the swap device every other such program, and their mappings are large
//! (16 pages up to a quarter of memory) and mostly filled whole right
//! after `mmap`, so that faults find no free page and must reclaim
//! (anonymous pages to swap when the platform has swap, clean file pages
//! dropped, dirty ones written back) and sometimes run out of memory. The
//! reference model has no memory to run out of: the lockstep run ends a
//! program at its first out-of-memory fault (see `lockstep`).
//!
//! Transparent huge pages: one platform in four has `thp=always`, one in
//! four `thp=madvise`; those get 32M of memory (the huge zero page keeps 2M
//! for ever, and a huge fault takes 2M at once) and their private anonymous
//! mappings are sometimes 2M or 4M long (2M aligned by `mmap`, so huge
//! faults happen), followed under `madvise` by `madvise hugepage` over the
//! whole mapping. The reference model has no huge pages: user-visible
//! behaviour must not change.
//!
//! Multi-size THP: one platform in three has `thp-sizes=` with a few of
//! the sizes 16K to 1M (small ones more often), with its small memory:
//! anonymous write faults then map folios where the range is free and
//! inside the mapping, and fall back under memory pressure. One mmap in
//! four there is a private anonymous mapping of 64K to 1M (a few pages
//! more, sometimes), drawn only on those platforms. The reference
//! model has no folios either.
//!
//! KSM: three in four private untagged mappings (one in eight tagged ones)
//! are made `mergeable` right after `mmap` (and `madvise` draws `mergeable` and `unmergeable`
//! too); `ksm-scan` comes alone or as two passes in a row, since a page
//! merges on its second pass. Both draws come from a stream of their own.
//!
//! No `mmap fixed=` (placement is checked by every other mmap).
//!
//! `parallel` blocks ([`GenConfig::parallel`]): once the steps are drawn,
//! a second random stream (from the seed, apart from the steps' stream, so
//! that a program's steps are the same with blocks or without) groups
//! runs of 2 to 4 consecutive steps after the prologue into blocks, each
//! with a schedule seed ([`BlockSchedule::Seed`]). A block never holds
//! `exit` or `exec` (a process ending or replacing itself under its other
//! threads is not what the blocks test), nor the commands that are not
//! atomic in Linux (`fill`, `verify`, `read-fd`, `write-fd`, `peektags`,
//! `poketags`, `settag`: loops over a range that a racing `munmap` or
//! `fork` may cut part way, which no serial order explains and Linux
//! allows), nor a step that reads a name bound
//! earlier in the block (bindings take effect at the block's `end`), nor
//! two commands of one process where Linux's per-thread state makes them
//! unlinearizable: a `prctl` or `fork` beside another command of its
//! process (the MTE control bits are per thread), or any two commands of a
//! process that may check tags asynchronously (its pending fault is taken
//! by whichever command enters the kernel first); the
//! lockstep run checks each block's replies against every serial order.
//! [`generate_parallel`] instead cuts a whole program into blocks for tests
//! that run the machine under test alone.

use core::fmt::Write as _;
use core::ops::Range;
use std::collections::{BTreeMap, BTreeSet};

use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, GRANULE_SIZE, Tag, TagMask, TagStoreOp};
use platform::{Design, FreeListOrder, Mistakes, OnReserveFailure, TagStorageData, Thp, ThpSizes};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use uapi::{AccessSize, Advice, Backing, MteCtrl, PrctlRequest, Prot, Sharing};

use crate::program::{
    Binding, Block, BlockSchedule, CHECK_MODES, Cmd, ProcName, Program, ProgramPlatform, PtrName,
    PtrRef, Step,
};
use lang::ast::ADVICES;

/// The transparent huge page size, the alignment of large private
/// anonymous and file mappings (`HPAGE_PMD_SIZE`).
const THP_SIZE: u64 = 2 << 20;

/// The kinds of step the generator draws from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum StepKind {
    Spawn,
    Fork,
    Exit,
    Exec,
    Prctl,
    PrctlGet,
    Tco,
    Yield,
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    Pin,
    Unpin,
    WriteFd,
    ReadFd,
    PeekTags,
    PokeTags,
    Load,
    Store,
    Fill,
    Verify,
    Irg,
    Addg,
    StoreTag,
    SetTag,
    Ldg,
    Reclaim,
    Compact,
    KsmScan,
}

impl StepKind {
    pub const ALL: [StepKind; 30] = [
        StepKind::Spawn,
        StepKind::Fork,
        StepKind::Exit,
        StepKind::Exec,
        StepKind::Prctl,
        StepKind::PrctlGet,
        StepKind::Tco,
        StepKind::Yield,
        StepKind::Mmap,
        StepKind::Munmap,
        StepKind::Mprotect,
        StepKind::Madvise,
        StepKind::Pin,
        StepKind::Unpin,
        StepKind::WriteFd,
        StepKind::ReadFd,
        StepKind::PeekTags,
        StepKind::PokeTags,
        StepKind::Load,
        StepKind::Store,
        StepKind::Fill,
        StepKind::Verify,
        StepKind::Irg,
        StepKind::Addg,
        StepKind::StoreTag,
        StepKind::SetTag,
        StepKind::Ldg,
        StepKind::Reclaim,
        StepKind::Compact,
        StepKind::KsmScan,
    ];

    /// The default weight: accesses and tag instructions dominate, the
    /// memory-management calls that move pages come next.
    pub const fn default_weight(self) -> u32 {
        match self {
            StepKind::Spawn => 1,
            StepKind::Fork => 4,
            StepKind::Exit => 1,
            StepKind::Exec => 1,
            StepKind::Prctl => 4,
            StepKind::PrctlGet => 1,
            StepKind::Tco => 1,
            StepKind::Yield => 1,
            StepKind::Mmap => 10,
            StepKind::Munmap => 3,
            StepKind::Mprotect => 4,
            StepKind::Madvise => 5,
            StepKind::Pin => 4,
            StepKind::Unpin => 2,
            StepKind::WriteFd => 3,
            StepKind::ReadFd => 3,
            StepKind::PeekTags => 2,
            StepKind::PokeTags => 2,
            StepKind::Load => 14,
            StepKind::Store => 12,
            StepKind::Fill => 5,
            StepKind::Verify => 5,
            StepKind::Irg => 4,
            StepKind::Addg => 2,
            StepKind::StoreTag => 9,
            StepKind::SetTag => 4,
            StepKind::Ldg => 7,
            StepKind::Reclaim => 1,
            StepKind::Compact => 2,
            StepKind::KsmScan => 1,
        }
    }
}

/// How often each [`StepKind`] is drawn (relative weights; 0 never).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Weights(BTreeMap<StepKind, u32>);

impl Default for Weights {
    fn default() -> Self {
        Weights(
            StepKind::ALL
                .into_iter()
                .map(|k| (k, k.default_weight()))
                .collect(),
        )
    }
}

impl Weights {
    pub fn get(&self, kind: StepKind) -> u32 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    pub fn set(&mut self, kind: StepKind, weight: u32) {
        self.0.insert(kind, weight);
    }

    fn total(&self) -> u64 {
        self.0.values().map(|&w| u64::from(w)).sum()
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub policy: Design,
    /// Known mistakes the drawn platforms switch on.
    pub mistakes: Mistakes,
    /// The drawn platforms have per-CPU page lists (`pcp=on`).
    pub pcp: bool,
    /// The drawn platforms' free-list order (`free-list-order=`).
    pub free_list_order: FreeListOrder,
    /// `thp-sizes=` of the drawn platforms, instead of the drawn sizes.
    pub thp_sizes: Option<ThpSizes>,
    /// Steps in the program (at least the first `spawn`).
    pub steps: usize,
    pub weights: Weights,
    /// The most processes alive at once.
    pub max_processes: usize,
    /// Run on this machine instead of one drawn from the seed (its policy
    /// then replaces `policy`). The platform is drawn either way, so the
    /// steps draw from the same point of the seed's stream.
    pub platform: Option<ProgramPlatform>,
    /// Percent chance that a step after the prologue opens a `parallel`
    /// block (module doc); 0 draws none.
    pub parallel: u32,
    /// Percent chance that the program overcommits memory (module doc);
    /// 0 draws none.
    pub overcommit: u32,
}

/// [`GenConfig::overcommit`] of `mtesim fuzz`.
pub const DEFAULT_OVERCOMMIT: u32 = 5;

/// [`GenConfig::parallel`] of `mtesim fuzz --parallel on`: about a
/// quarter of the commands run inside blocks (a block ends early before a
/// command that may not join it).
pub const DEFAULT_PARALLEL: u32 = 20;

impl GenConfig {
    pub fn new(policy: Design, steps: usize) -> GenConfig {
        GenConfig {
            policy,
            mistakes: Mistakes::NONE,
            pcp: false,
            free_list_order: FreeListOrder::Address,
            thp_sizes: None,
            steps,
            weights: Weights::default(),
            max_processes: 4,
            platform: None,
            parallel: 0,
            overcommit: 0,
        }
    }

    /// Programs for one fixed machine.
    pub fn on(platform: ProgramPlatform, steps: usize) -> GenConfig {
        GenConfig {
            platform: Some(platform),
            ..GenConfig::new(platform.policy, steps)
        }
    }
}

/// Where the tag of a granule came from, as far as the program knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TagSrc {
    Known(Tag),
    /// Stored with a `t{n}` pointer (its tag chosen by IRG or ADDG).
    Via(u32),
}

#[derive(Clone, Debug)]
struct MapModel {
    name: u32,
    pages: u64,
    prot: Prot,
    sharing: Sharing,
    backing: Backing,
    /// Granule index within the mapping to the tag last set there.
    tags: BTreeMap<u64, TagSrc>,
}

impl MapModel {
    fn tagged(&self) -> bool {
        self.prot.mte
    }
}

#[derive(Clone, Debug)]
struct ProcModel {
    name: ProcName,
    maps: Vec<MapModel>,
    /// The settings, as far as the program knows.
    ctrl: MteCtrl,
    /// Pinned ranges: mapping name, first page, pages, and whether the pin
    /// is short-term (`longterm=off`).
    pins: Vec<(u32, u64, u64, bool)>,
}

impl ProcModel {
    fn new(name: ProcName) -> ProcModel {
        ProcModel {
            name,
            maps: Vec::new(),
            ctrl: MteCtrl::default(),
            pins: Vec::new(),
        }
    }

    fn pages(&self) -> u64 {
        self.maps.iter().map(|m| m.pages).sum()
    }
}

/// The most pages short-term pins hold at once in a program.
const SHORT_TERM_PIN_PAGES: u64 = 4;

/// A `t{n}` pointer: its mapping and offset from the mapping's base.
#[derive(Clone, Copy, Debug)]
struct TaggedModel {
    map: u32,
    offset: u64,
}

struct Gen<'c> {
    config: &'c GenConfig,
    rng: Xoshiro256PlusPlus,
    page: u64,
    /// Pages all live processes may touch together, at most.
    budget: u64,
    /// Memory is overcommitted (module doc).
    overcommit: bool,
    /// The machine's memory in pages.
    memory_pages: u64,
    /// The draws of overcommitting programs' extra steps, from their own
    /// stream (module doc).
    over_rng: Xoshiro256PlusPlus,
    thp: Thp,
    /// The platform enables multi-size THP sizes (`thp-sizes=`).
    mthp: bool,
    procs: Vec<ProcModel>,
    next_proc: u32,
    next_map: u32,
    tagged: Vec<TaggedModel>,
    /// Shared mappings some `mprotect(PROT_MTE)` was drawn on, in whole or
    /// in part, by any process: no short-term pin is drawn on them (see
    /// [`Gen::pin`]).
    shared_made_tagged: BTreeSet<u32>,
    steps: Vec<Step>,
    /// The draws of KSM's extra steps (`madvise mergeable` after an mmap,
    /// a second `ksm-scan`), from their own stream so that the other steps
    /// of a seed are those of versions without them.
    ksm_rng: Xoshiro256PlusPlus,
}

/// A program of `config.steps` steps for `config.policy`, from `seed`.
pub fn generate(config: &GenConfig, seed: u64) -> Program {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut drawn = ProgramPlatform {
        mistakes: config.mistakes,
        pcp: config.pcp,
        free_list_order: config.free_list_order,
        ..draw_platform(&mut rng, config.policy, seed)
    };
    if let Some(sizes) = config.thp_sizes {
        drawn.thp_sizes = sizes;
    }
    let platform = config.platform.unwrap_or(drawn);
    let spec = platform.spec();
    let page = spec.page_size;
    let memory_pages = spec.memory / page;
    let mut over_rng = overcommit_stream(seed);
    let overcommit = over_rng.next_u64() % 100 < u64::from(config.overcommit);
    let budget = match overcommit {
        false => memory_pages / 3,
        true => {
            let swap = match over_rng.next_u32().is_multiple_of(2) {
                true => spec.swap / page,
                false => 0,
            };
            memory_pages + memory_pages / 2 + swap
        }
    };
    let mut gen_ = Gen {
        config,
        rng,
        page,
        budget,
        overcommit,
        memory_pages,
        over_rng,
        thp: platform.thp,
        mthp: !platform.thp_sizes.is_empty(),
        procs: Vec::new(),
        next_proc: 0,
        next_map: 0,
        tagged: Vec::new(),
        shared_made_tagged: BTreeSet::new(),
        steps: Vec::with_capacity(config.steps),
        ksm_rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6b73_6d5f_7363_616e),
    };
    gen_.spawn();
    if gen_.chance(80) {
        // Most programs check tags from the start, as MTE users do.
        let request = PrctlRequest {
            tagged_addr: Some(true),
            tcf: Some(CheckMode::Sync),
            include: Some(TagMask::from_bits(0xfffe)),
            store_only: None,
        };
        gen_.prctl_step(0, request);
    }
    while gen_.steps.len() < config.steps {
        gen_.one();
    }
    gen_.steps.truncate(config.steps);
    let mut steps = gen_.steps;
    if config.parallel > 0 {
        steps = group_blocks(steps, config.parallel, seed, spec.cpus);
    }
    Program { platform, steps }
}

/// The stream of the overcommitting draws of the program of `seed`.
fn overcommit_stream(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6f76_6572_636f_6d6d)
}

/// Whether [`generate`] makes the program of `seed` overcommit memory
/// when `percent` of programs do (module doc).
pub fn overcommits(percent: u32, seed: u64) -> bool {
    overcommit_stream(seed).next_u64() % 100 < u64::from(percent)
}

/// Whether a step may run inside a block (module doc).
fn groupable(step: &Step) -> bool {
    match step {
        Step::Parallel(_) => false,
        Step::Spawn(_) | Step::Reclaim { .. } | Step::Compact | Step::KsmScan => true,
        Step::Process { cmd, .. } => !matches!(
            cmd,
            Cmd::Exit
                | Cmd::Exec
                // Not atomic in Linux: user loops and kernel copies over a
                // range, which a racing munmap, mprotect or fork may cut
                // part way (a short read, a fault in the middle, a child
                // with half the bytes), giving replies no serial order
                // gives and Linux allows.
                | Cmd::Fill { .. }
                | Cmd::Verify { .. }
                | Cmd::ReadFd { .. }
                | Cmd::WriteFd { .. }
                | Cmd::PeekTags { .. }
                | Cmd::PokeTags { .. }
                | Cmd::SetTag { .. }
        ),
    }
}

/// Groups runs of consecutive steps after the prologue into `parallel`
/// blocks (module doc), from a stream of its own.
fn group_blocks(steps: Vec<Step>, percent: u32, seed: u64, cpus: u32) -> Vec<Step> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7061_7261_6c6c_656c);
    let widest = cpus.clamp(2, 4) as u64;
    let start = prologue_len(&steps);
    let deferred = deferred_fault_procs(&steps);
    let mut out = Vec::with_capacity(steps.len());
    let mut steps = steps.into_iter().peekable();
    out.extend(steps.by_ref().take(start));
    while let Some(step) = steps.next() {
        if u64::from(percent) <= rng.next_u64() % 100 || !groupable(&step) {
            out.push(step);
            continue;
        }
        let width = 2 + rng.next_u64() % (widest - 1);
        let mut bound: BTreeSet<Binding> = step.binds().into_iter().collect();
        let mut block = vec![step];
        while (block.len() as u64) < width {
            let Some(next) = steps.peek() else {
                break;
            };
            let (procs, ptr) = next.uses();
            let reads_bound = procs.iter().any(|p| bound.contains(&Binding::Proc(*p)))
                || ptr.is_some_and(|p| bound.contains(&Binding::Ptr(p)));
            if reads_bound || !groupable(next) || !linearizable_beside(&block, next, &deferred) {
                break;
            }
            bound.extend(next.binds());
            block.extend(steps.next());
        }
        if block.len() < 2 {
            out.extend(block);
            continue;
        }
        out.push(Step::Parallel(Block {
            steps: block,
            schedule: BlockSchedule::Seed(rng.next_u64()),
        }));
    }
    out
}

/// The processes that may ever check tags in async or asymmetric mode (a
/// `prctl` asks for it, or they were forked from one that might): their
/// pending asynchronous fault is taken at the next kernel entry, before
/// any lock (Linux `mte_check_tfsr_entry()`), so two of their commands in
/// one block can see it in an order no serial run gives.
fn deferred_fault_procs(steps: &[Step]) -> BTreeSet<ProcName> {
    let mut procs = BTreeSet::new();
    for step in steps {
        if let Step::Process { proc, cmd } = step {
            match cmd {
                Cmd::Prctl(request)
                    if matches!(request.tcf, Some(CheckMode::Async | CheckMode::Asymm)) =>
                {
                    procs.insert(*proc);
                }
                Cmd::Fork { child } if procs.contains(proc) => {
                    procs.insert(*child);
                }
                _ => {}
            }
        }
    }
    procs
}

/// Whether `next` may join `block` as a step of another thread without
/// giving replies no serial order explains (Linux allows them; the
/// reference, which linearizes, cannot): the MTE control bits are per
/// thread, so a `prctl` beside a `fork` or another command of the same
/// process changes what that other thread sees only in Linux's per-thread
/// sense; and a process in `deferred` (async or asymmetric checks) takes
/// its pending fault at whichever of its commands enters the kernel first.
fn linearizable_beside(block: &[Step], next: &Step, deferred: &BTreeSet<ProcName>) -> bool {
    let Step::Process { proc, cmd } = next else {
        return true;
    };
    let controls = |c: &Cmd| matches!(c, Cmd::Prctl(_) | Cmd::Fork { .. });
    block.iter().all(|step| match step {
        Step::Process {
            proc: other,
            cmd: other_cmd,
        } if other == proc => !deferred.contains(proc) && !controls(cmd) && !controls(other_cmd),
        _ => true,
    })
}

/// The leading `spawn` and `prctl` lines.
fn prologue_len(steps: &[Step]) -> usize {
    steps
        .iter()
        .position(|s| {
            !matches!(s, Step::Spawn(_))
                && !matches!(
                    s,
                    Step::Process {
                        cmd: Cmd::Prctl(_),
                        ..
                    }
                )
        })
        .unwrap_or(steps.len())
}

/// A program whose steps run in `parallel` blocks: `blocks` are ranges of
/// `program.steps`, each one block; the steps outside them run alone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParallelProgram {
    pub program: Program,
    pub blocks: Vec<Range<usize>>,
}

/// A program of [`generate`] whose steps after the prologue (the leading
/// `spawn` and `prctl` lines) are cut into `parallel` blocks
/// of at most `width` commands (at least 1, at most the platform's CPUs).
/// A block ends early before a step that reads a name bound inside it,
/// since a block's bindings take effect at its `end`.
///
/// Outcomes depend on the interleaving and the reference model runs
/// sequentially, so these programs are not run in lockstep: what they
/// check is that the machine finishes every block and keeps its
/// invariants.
pub fn generate_parallel(config: &GenConfig, seed: u64, width: usize) -> ParallelProgram {
    let program = generate(config, seed);
    let width = width.clamp(1, platform::PlatformSpec::default().cpus as usize);
    let mut blocks: Vec<Range<usize>> = Vec::new();
    let mut bound = BTreeSet::new();
    let start = program
        .steps
        .iter()
        .position(|s| {
            !matches!(s, Step::Spawn(_))
                && !matches!(
                    s,
                    Step::Process {
                        cmd: Cmd::Prctl(_),
                        ..
                    }
                )
        })
        .unwrap_or(program.steps.len());
    let mut open = start..start;
    for (i, step) in program.steps.iter().enumerate().skip(start) {
        let (procs, ptr) = step.uses();
        let reads_bound = procs.iter().any(|p| bound.contains(&Binding::Proc(*p)))
            || ptr.is_some_and(|p| bound.contains(&Binding::Ptr(p)));
        if open.len() == width || reads_bound {
            blocks.push(open.clone());
            open = i..i;
            bound.clear();
        }
        open.end = i + 1;
        bound.extend(step.binds());
    }
    if !open.is_empty() {
        blocks.push(open);
    }
    ParallelProgram { program, blocks }
}

impl ParallelProgram {
    /// The `.mte` text: the platform line, the prologue's lines, then one
    /// `parallel` ... `end` block per range.
    pub fn render(&self) -> String {
        let mut text = format!("{}\n", self.program.platform);
        let mut blocks = self.blocks.iter().peekable();
        let mut i = 0;
        while i < self.program.steps.len() {
            match blocks.peek() {
                Some(block) if block.start == i => {
                    text.push_str("parallel\n");
                    for step in &self.program.steps[(*block).clone()] {
                        let _ = writeln!(text, "  {step}");
                    }
                    text.push_str("end\n");
                    i = block.end.max(i + 1);
                    blocks.next();
                }
                _ => {
                    let _ = writeln!(text, "{}", self.program.steps[i]);
                    i += 1;
                }
            }
        }
        text
    }
}

fn draw_platform(rng: &mut Xoshiro256PlusPlus, policy: Design, seed: u64) -> ProgramPlatform {
    let memory: u64 = if rng.next_u32().is_multiple_of(2) {
        8 << 20
    } else {
        16 << 20
    };
    let rules = policy.rules();
    let (block_size, data) = match rules.mte() {
        false => (None, None),
        true => {
            let block = match rng.next_u32() % 3 {
                0 => None,
                1 => Some(16 << 10),
                _ => Some(64 << 10),
            };
            // Where tag storage is lent, push data into it.
            let data = if !rules.lends_storage() {
                None
            } else {
                match rng.next_u32() % 10 {
                    0..=6 => Some(TagStorageData::Prefer),
                    7 | 8 => None,
                    _ => Some(TagStorageData::Never),
                }
            };
            (block, data)
        }
    };
    // Swap most of the time (`madvise pageout` is among the drawn advices),
    // often small enough to fill up.
    let swap = match rng.next_u32() % 4 {
        0 => 0,
        1 => 32 << 10,
        2 => 1 << 20,
        _ => 4 << 20,
    };
    // From its own stream, so that programs without THP are those of
    // earlier versions draw for draw.
    let mut thp_rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7468_705f_7468_705f);
    let thp = match thp_rng.next_u32() % 4 {
        0 => Thp::Always,
        1 => Thp::Madvise,
        _ => Thp::Never,
    };
    let memory = if thp == Thp::Never { memory } else { 32 << 20 };
    // Multi-size THP: one platform in three enables a few sizes (drawn
    // from a stream of their own, like THP). A folio never takes more
    // pages than its mapping has, so the budget below still holds and the
    // small memories stay: mTHP allocations fail and fall back under
    // pressure.
    let mut mthp_rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6d74_6870_5f73_7a73);
    let mut thp_sizes = ThpSizes::NONE;
    if mthp_rng.next_u32().is_multiple_of(3) {
        let mask = mthp_rng.next_u32();
        for order in ThpSizes::MIN_ORDER..=ThpSizes::MAX_ORDER {
            // Small sizes more often: they fit the usual mappings.
            if mask & (1 << order) != 0 && (order <= 4 || mthp_rng.next_u32().is_multiple_of(2)) {
                thp_sizes = thp_sizes.with(order);
            }
        }
        if thp_sizes.is_empty() {
            thp_sizes = thp_sizes.with(2 + mthp_rng.next_u32() % 3);
        }
    }
    ProgramPlatform {
        memory,
        policy,
        block_size,
        data,
        swap,
        thp,
        seed: seed % 1000,
        mistakes: Mistakes::NONE,
        pcp: false,
        thp_sizes,
        free_list_order: FreeListOrder::Address,
    }
}

impl Gen<'_> {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.rng.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn tag(&mut self) -> Tag {
        Tag::from_low_bits(self.below(16))
    }

    fn used_pages(&self) -> u64 {
        self.procs.iter().map(ProcModel::pages).sum()
    }

    fn push(&mut self, proc: usize, cmd: Cmd) {
        let name = self.procs[proc].name;
        self.steps.push(Step::Process { proc: name, cmd });
    }

    /// One step (or none, when the kind drawn cannot apply now: the caller
    /// draws again).
    fn one(&mut self) {
        if self.procs.is_empty() {
            self.spawn();
            return;
        }
        let mut ticket = self.below(self.config.weights.total());
        let mut kind = StepKind::Yield;
        for k in StepKind::ALL {
            let w = u64::from(self.config.weights.get(k));
            if ticket < w {
                kind = k;
                break;
            }
            ticket -= w;
        }
        let p = self.below(self.procs.len() as u64) as usize;
        match kind {
            StepKind::Spawn => {
                if self.procs.len() < self.config.max_processes {
                    self.spawn();
                }
            }
            StepKind::Fork => self.fork(p),
            StepKind::Exit => {
                self.push(p, Cmd::Exit);
                self.procs.remove(p);
            }
            StepKind::Exec => {
                self.push(p, Cmd::Exec);
                let name = self.procs[p].name;
                self.procs[p] = ProcModel::new(name);
            }
            StepKind::Prctl => self.prctl(p),
            StepKind::PrctlGet => self.push(p, Cmd::PrctlGet),
            StepKind::Tco => {
                // Mostly off again: TCO on hides every check.
                let on = self.chance(30);
                self.push(p, Cmd::Tco(on));
            }
            StepKind::Yield => self.push(p, Cmd::Yield),
            StepKind::Mmap => self.mmap(p),
            StepKind::Munmap => self.munmap(p),
            StepKind::Mprotect => self.mprotect(p),
            StepKind::Madvise => self.madvise(p),
            StepKind::Pin => self.pin(p),
            StepKind::Unpin => self.unpin(p),
            StepKind::WriteFd | StepKind::ReadFd => self.fd(p, kind == StepKind::WriteFd),
            StepKind::PeekTags | StepKind::PokeTags => self.ptrace(p, kind == StepKind::PeekTags),
            StepKind::Load
            | StepKind::Store
            | StepKind::Fill
            | StepKind::Verify
            | StepKind::StoreTag
            | StepKind::SetTag
            | StepKind::Ldg => self.access(p, kind),
            StepKind::Irg | StepKind::Addg => self.make_tagged(p, kind == StepKind::Irg),
            StepKind::Reclaim => {
                let pages = 1 + self.below(64);
                self.steps.push(Step::Reclaim { pages });
            }
            StepKind::Compact => self.steps.push(Step::Compact),
            StepKind::KsmScan => {
                // A page merges on its second pass (the first records its
                // checksum): often two passes in a row.
                self.steps.push(Step::KsmScan);
                if self.ksm_rng.next_u32().is_multiple_of(2) {
                    self.steps.push(Step::KsmScan);
                }
            }
        }
    }

    fn spawn(&mut self) {
        let name = ProcName(self.next_proc);
        self.next_proc += 1;
        self.steps.push(Step::Spawn(name));
        self.procs.push(ProcModel::new(name));
    }

    fn fork(&mut self, p: usize) {
        let pages = self.procs[p].pages();
        if self.procs.len() >= self.config.max_processes || self.used_pages() + pages > self.budget
        {
            return;
        }
        let child = ProcName(self.next_proc);
        self.next_proc += 1;
        self.push(p, Cmd::Fork { child });
        let mut model = self.procs[p].clone();
        model.name = child;
        // Pins belong to the parent (semantics.md §11).
        model.pins.clear();
        self.procs.push(model);
    }

    fn prctl_step(&mut self, p: usize, request: PrctlRequest) {
        self.push(p, Cmd::Prctl(request));
        // A guess where the call fails (no MTE): the model is a guide.
        let model = &mut self.procs[p];
        model.ctrl = request.apply(model.ctrl);
    }

    fn prctl(&mut self, p: usize) {
        let mut request = PrctlRequest::default();
        if self.chance(50) {
            request.tagged_addr = Some(self.chance(85));
        }
        if self.chance(70) {
            request.tcf = Some(match self.below(10) {
                0..=3 => CheckMode::Sync,
                4 | 5 => CheckMode::Async,
                6 | 7 => CheckMode::Asymm,
                _ => CHECK_MODES[0],
            });
        }
        if self.chance(40) {
            let bits = match self.below(4) {
                0 => 0xfffe,
                1 => 0xffff,
                2 => 0,
                _ => self.below(0x1_0000) as u16,
            };
            request.include = Some(TagMask::from_bits(bits));
        }
        if self.chance(25) {
            request.store_only = Some(self.chance(40));
        }
        if request == PrctlRequest::default() {
            request.tcf = Some(CheckMode::Sync);
        }
        self.prctl_step(p, request);
    }

    fn mmap(&mut self, p: usize) {
        if self.thp != Thp::Never && self.chance(25) {
            self.huge_mmap(p);
            return;
        }
        if self.mthp && self.chance(25) {
            self.mthp_mmap(p);
            return;
        }
        let pages = match self.below(20) {
            _ if self.overcommit => 16 + self.below(self.memory_pages / 4),
            0..=11 => 1 + self.below(4),
            12..=17 => 1 + self.below(16),
            18 => 1 + self.below(64),
            // 2 MiB and a little more: thp_get_unmapped_area() places these
            // 2 MiB-aligned, after a search padded by 2 MiB
            // (docs/semantics.md §7). The budget below still bounds them.
            _ => THP_SIZE / self.page + self.below(3),
        };
        if self.used_pages() + pages > self.budget {
            // Make room instead.
            self.munmap(p);
            return;
        }
        let mte = self.config.policy.rules().mte();
        let backing = match self.below(10) {
            0..=5 => Backing::Anon,
            6..=8 => Backing::Shm,
            _ => Backing::File,
        };
        let sharing = if self.chance(30) {
            Sharing::Shared
        } else {
            Sharing::Private
        };
        let prot = match self.below(20) {
            0 => Prot::NONE,
            1 => Prot {
                read: true,
                ..Prot::NONE
            },
            2 => Prot {
                exec: true,
                read: true,
                ..Prot::NONE
            },
            // Mostly tagged where it can be, sometimes asked where it
            // cannot (file, no MTE: EINVAL).
            3..=13 => Prot {
                mte: backing != Backing::File || self.chance(10),
                ..Prot::READ_WRITE
            },
            _ => Prot::READ_WRITE,
        };
        let populate = self.chance(20);
        let name = self.next_map;
        self.next_map += 1;
        // Short of a page sometimes: the length is rounded up.
        let len = if self.chance(10) {
            pages * self.page - self.below(self.page - 1) - 1
        } else {
            pages * self.page
        };
        self.push(
            p,
            Cmd::Mmap {
                name,
                len,
                prot,
                sharing,
                backing,
                populate,
            },
        );
        let fails = prot.mte && (!mte || backing == Backing::File);
        // KSM's candidates: private untagged memory, mostly made mergeable;
        // tagged memory sometimes too (KSM must leave it alone).
        let mergeable = match prot.mte {
            false => !self.ksm_rng.next_u32().is_multiple_of(4),
            true => self.ksm_rng.next_u32().is_multiple_of(8),
        };
        if !fails && sharing == Sharing::Private && mergeable {
            self.push(
                p,
                Cmd::Madvise {
                    ptr: PtrRef::at(PtrName::Map(name), 0),
                    len,
                    advice: Advice::Mergeable,
                },
            );
        }
        if !fails && self.overcommit && prot.write && !self.over_rng.next_u32().is_multiple_of(4) {
            // Touch every page, so that memory fills (module doc).
            let byte = self.pick(&[0x5a, 0xff, 0x11]);
            self.push(
                p,
                Cmd::Fill {
                    ptr: PtrRef::at(PtrName::Map(name), 0),
                    len,
                    byte,
                },
            );
        }
        if !fails {
            self.procs[p].maps.push(MapModel {
                name,
                pages,
                prot,
                sharing,
                backing,
                tags: BTreeMap::new(),
            });
        }
    }

    /// A private anonymous mapping of 2M or 4M, tagged where it can be (2M
    /// aligned: huge faults may map it); under `thp=madvise`, usually
    /// followed by `madvise hugepage` over all of it.
    fn huge_mmap(&mut self, p: usize) {
        let huge_pages = (2 << 20) / self.page;
        let pages = huge_pages * (1 + self.below(2));
        if self.used_pages() + pages > self.budget {
            self.munmap(p);
            return;
        }
        let prot = Prot {
            mte: self.config.policy.rules().mte() && self.chance(70),
            ..Prot::READ_WRITE
        };
        let populate = self.chance(10);
        let name = self.private_anon_mmap(p, pages, prot, populate);
        if self.thp == Thp::Madvise && self.chance(80) {
            self.push(
                p,
                Cmd::Madvise {
                    ptr: PtrRef::at(PtrName::Map(name), 0),
                    len: pages * self.page,
                    advice: Advice::HugePage,
                },
            );
        }
    }

    /// A private anonymous mapping of 64K to 1M and a little more, where
    /// write faults map multi-size THP folios (and fall back at its end).
    fn mthp_mmap(&mut self, p: usize) {
        let pages = (16 << self.below(5)) + self.below(4);
        if self.used_pages() + pages > self.budget {
            self.munmap(p);
            return;
        }
        let prot = Prot {
            mte: self.config.policy.rules().mte() && self.chance(50),
            ..Prot::READ_WRITE
        };
        self.private_anon_mmap(p, pages, prot, false);
    }

    /// `mmap` of a new private anonymous mapping of `pages` for process
    /// `p`, recorded in its model; returns the mapping's name.
    fn private_anon_mmap(&mut self, p: usize, pages: u64, prot: Prot, populate: bool) -> u32 {
        let name = self.next_map;
        self.next_map += 1;
        self.push(
            p,
            Cmd::Mmap {
                name,
                len: pages * self.page,
                prot,
                sharing: Sharing::Private,
                backing: Backing::Anon,
                populate,
            },
        );
        self.procs[p].maps.push(MapModel {
            name,
            pages,
            prot,
            sharing: Sharing::Private,
            backing: Backing::Anon,
            tags: BTreeMap::new(),
        });
        name
    }

    fn some_map(&mut self, p: usize) -> Option<usize> {
        let n = self.procs[p].maps.len() as u64;
        (n > 0).then(|| self.below(n) as usize)
    }

    /// A page-aligned range of mapping `m` of process `p`: whole, or a run
    /// of pages inside it.
    fn page_range(&mut self, p: usize, m: usize) -> (u64, u64) {
        let pages = self.procs[p].maps[m].pages;
        if self.chance(50) {
            return (0, pages);
        }
        let first = self.below(pages);
        let count = 1 + self.below(pages - first);
        (first, count)
    }

    fn munmap(&mut self, p: usize) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let map = &self.procs[p].maps[m];
        let (name, pages) = (map.name, map.pages);
        if pages > 1 && self.chance(30) {
            // The tail: the mapping keeps its head.
            let keep = 1 + self.below(pages - 1);
            let ptr = PtrRef::at(PtrName::Map(name), keep * self.page);
            self.push(
                p,
                Cmd::Munmap {
                    ptr,
                    len: (pages - keep) * self.page,
                },
            );
            let map = &mut self.procs[p].maps[m];
            map.pages = keep;
            let granules = keep * self.page / GRANULE_SIZE;
            map.tags.retain(|&g, _| g < granules);
        } else {
            let ptr = PtrRef::at(PtrName::Map(name), 0);
            self.push(
                p,
                Cmd::Munmap {
                    ptr,
                    len: pages * self.page,
                },
            );
            self.procs[p].maps.remove(m);
        }
    }

    fn mprotect(&mut self, p: usize) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let (first, count) = self.page_range(p, m);
        let map = &self.procs[p].maps[m];
        let name = map.name;
        let prot = match self.below(6) {
            0 => Prot::NONE,
            1 => Prot {
                read: true,
                ..Prot::NONE
            },
            // A page held by a short-term pin cannot move, so one turned
            // tagged where its storage cannot be had (it lies in tag
            // storage, or its block cannot be claimed) replays its fault
            // until unpinned: a livelock of the program, not of the kernel.
            // Not drawn while such a pin is held.
            2 | 3 if !self.short_term_pin_held() => Prot {
                mte: true,
                ..Prot::READ_WRITE
            },
            _ => Prot::READ_WRITE,
        };
        let ptr = PtrRef::at(PtrName::Map(name), first * self.page);
        self.push(
            p,
            Cmd::Mprotect {
                ptr,
                len: count * self.page,
                prot,
            },
        );
        let mte = self.config.policy.rules().mte();
        if prot.mte && self.procs[p].maps[m].sharing == Sharing::Shared {
            self.shared_made_tagged.insert(name);
        }
        let map = &mut self.procs[p].maps[m];
        // Whole-mapping changes only; a part leaves the model a guess.
        if first == 0 && count == map.pages && (!prot.mte || (mte && map.backing != Backing::File))
        {
            map.prot = Prot {
                mte: map.prot.mte || prot.mte,
                ..prot
            };
        }
    }

    fn madvise(&mut self, p: usize) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let (first, count) = self.page_range(p, m);
        let advice = self.pick(&ADVICES);
        let map = &mut self.procs[p].maps[m];
        let name = map.name;
        if advice == Advice::DontNeed && map.sharing == Sharing::Private {
            let granules = self.page / GRANULE_SIZE;
            map.tags
                .retain(|&g, _| g < first * granules || g >= (first + count) * granules);
        }
        let ptr = PtrRef::at(PtrName::Map(name), first * self.page);
        self.push(
            p,
            Cmd::Madvise {
                ptr,
                len: count * self.page,
                advice,
            },
        );
    }

    /// Whether a short-term pin may be drawn: not under a design whose
    /// fault path retries a failed reservation for ever (`rfc-v2`), where a
    /// held short-term pin in a block a tagged fault needs is a documented
    /// livelock (question e of `docs/designs.md`), not a finding. With
    /// `mistake=retry-forever` switched on explicitly they are drawn: that
    /// livelock is what the fuzzer must find.
    fn short_term_pins_allowed(&self) -> bool {
        self.config.policy.rules().on_reserve_failure != OnReserveFailure::RetryAndReplay
    }

    /// Whether some process holds a long-term pin (in any mapping: one made
    /// tagged in part is not tagged as far as the generator knows).
    fn long_term_pin_held(&self) -> bool {
        self.procs
            .iter()
            .any(|p| p.pins.iter().any(|&(_, _, _, short)| !short))
    }

    /// Whether some process holds a short-term pin.
    fn short_term_pin_held(&self) -> bool {
        self.procs
            .iter()
            .any(|p| p.pins.iter().any(|&(_, _, _, short)| short))
    }

    fn pin(&mut self, p: usize) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let (first, mut count) = self.page_range(p, m);
        // A long-term pin migrates a page out of tag storage first, which
        // fails (ENOMEM, as in Linux) for a page a short-term pin holds
        // there: where the page lies is invisible to the reference, so no
        // long-term pin is drawn while a short-term one is held.
        // Nor a short-term pin while a long-term pin is held: a page pinned
        // before an `mprotect(PROT_MTE)` (of all or part of its mapping) made it tagged
        // awaits tag storage and cannot move to a page whose storage is
        // reserved, so its block must be claimed, which a short-term pin in
        // that block stops: the same livelock, by the other order.
        // (The draws are those of versions without this rule.)
        let short =
            self.short_term_pins_allowed() && (self.short_term_pin_held() || self.chance(50));
        let mut longterm = !short;
        if short && self.long_term_pin_held() {
            if self.short_term_pin_held() {
                return;
            }
            longterm = true;
        }
        if !longterm
            && self
                .shared_made_tagged
                .contains(&self.procs[p].maps[m].name)
        {
            // Nor a short-term pin of a shared mapping that some process
            // made tagged: through another process's untagged mapping of it
            // (a child forked before the `mprotect`) the pin faults a page
            // in as untagged data, which may lie in tag storage; the
            // tagged mapping's next access must move it out, which the pin
            // stops: the same livelock again, found by the proptest of
            // `dynamic` with Linux's free lists.
            return;
        }
        if !longterm {
            // Short-term pins are short: a pipe holds 16 pages at most.
            // Few and small, so that a tagged page can still find a block
            // to reserve on the smallest machines drawn.
            let held: u64 = self
                .procs
                .iter()
                .flat_map(|p| p.pins.iter())
                .filter(|pin| pin.3)
                .map(|pin| pin.2)
                .sum();
            if held >= SHORT_TERM_PIN_PAGES {
                return;
            }
            count = count.min(SHORT_TERM_PIN_PAGES - held);
        }
        let map = &self.procs[p].maps[m];
        let name = map.name;
        let ptr = PtrRef::at(PtrName::Map(name), first * self.page);
        self.push(
            p,
            Cmd::Pin {
                ptr,
                len: count * self.page,
                longterm,
            },
        );
        // Recorded even where the pin should fail (a mapping not writable,
        // or FOLL_LONGTERM on a shared file mapping): blocks may run it
        // before the step the generator saw first (an `mprotect` to
        // `prot=none` beside it), and the rules above must hold for every
        // pin that may be held. Unpinning a pin that failed is EINVAL,
        // which the reference answers too.
        self.procs[p].pins.push((name, first, count, !longterm));
    }

    fn unpin(&mut self, p: usize) {
        let pins = self.procs[p].pins.len() as u64;
        if pins == 0 || self.chance(10) {
            // Unpinning what is not pinned: EINVAL.
            let Some(m) = self.some_map(p) else {
                return;
            };
            let name = self.procs[p].maps[m].name;
            let ptr = PtrRef::at(PtrName::Map(name), 0);
            self.push(
                p,
                Cmd::Unpin {
                    ptr,
                    len: self.page,
                },
            );
            return;
        }
        let i = self.below(pins) as usize;
        let (name, first, count, _) = self.procs[p].pins.remove(i);
        let ptr = PtrRef::at(PtrName::Map(name), first * self.page);
        self.push(
            p,
            Cmd::Unpin {
                ptr,
                len: count * self.page,
            },
        );
    }

    /// A pointer into mapping `m` of `p` for an access of `len` bytes:
    /// mostly inside, with the tag last set there; sometimes one granule
    /// past the end, or a wrong tag. Also the granule chosen, when inside.
    fn pointer(&mut self, p: usize, m: usize, len: u64, aligned: bool) -> PtrRef {
        let map = &self.procs[p].maps[m];
        let (name, granules) = (map.name, map.pages * self.page / GRANULE_SIZE);
        let span = len.div_ceil(GRANULE_SIZE).max(1);
        let granule = if self.chance(4) {
            granules
        } else if self.chance(50) && !self.procs[p].maps[m].tags.is_empty() {
            // Near a granule the program tagged.
            let keys: Vec<u64> = self.procs[p].maps[m].tags.keys().copied().collect();
            self.pick(&keys)
        } else {
            self.below(granules.saturating_sub(span - 1).max(1))
        };
        let within = if aligned || self.chance(60) {
            0
        } else {
            self.below(GRANULE_SIZE)
        };
        let offset = granule * GRANULE_SIZE + within;
        let src = self.procs[p].maps[m].tags.get(&granule).copied();
        let mut ptr = PtrRef::at(PtrName::Map(name), offset);
        if self.chance(8) {
            ptr.tag = Some(self.tag());
            return ptr;
        }
        match src {
            Some(TagSrc::Known(tag)) => ptr.tag = Some(tag),
            Some(TagSrc::Via(t)) => {
                let model = self.tagged[t as usize];
                if model.map == name && model.offset <= offset {
                    ptr = PtrRef::at(PtrName::Tagged(t), offset - model.offset);
                }
            }
            None => {}
        }
        ptr
    }

    /// Records that `p` set the tags of `granules` granules from `ptr` in
    /// mapping `m` (and writes through shared memory reach every process's
    /// model only as far as the model cares: not at all).
    fn record_tags(&mut self, p: usize, m: usize, ptr: &PtrRef, granules: u64) {
        let map_name = self.procs[p].maps[m].name;
        let (start, src) = match ptr.base {
            PtrName::Map(_) => (ptr.offset, TagSrc::Known(ptr.tag.unwrap_or(Tag::ZERO))),
            PtrName::Tagged(t) => {
                let model = self.tagged[t as usize];
                match ptr.tag {
                    Some(tag) => (model.offset + ptr.offset, TagSrc::Known(tag)),
                    None => (model.offset + ptr.offset, TagSrc::Via(t)),
                }
            }
        };
        let map = &mut self.procs[p].maps[m];
        if map.name != map_name || !map.tagged() {
            return;
        }
        let first = start / GRANULE_SIZE;
        let limit = map.pages * self.page / GRANULE_SIZE;
        for g in first..(first + granules).min(limit) {
            map.tags.insert(g, src);
        }
    }

    fn access(&mut self, p: usize, kind: StepKind) {
        let Some(m) = self.some_map(p) else {
            self.mmap(p);
            return;
        };
        match kind {
            StepKind::Load | StepKind::Store => {
                let size = self.pick(&[
                    AccessSize::B1,
                    AccessSize::B2,
                    AccessSize::B4,
                    AccessSize::B8,
                    AccessSize::B8,
                    AccessSize::B16,
                ]);
                let ptr = self.pointer(p, m, size.bytes(), false);
                if kind == StepKind::Load {
                    self.push(p, Cmd::Load { ptr, size });
                } else {
                    let value = (u128::from(self.rng.next_u64()) << 64
                        | u128::from(self.rng.next_u64()))
                        & size.max_value();
                    self.push(p, Cmd::Store { ptr, size, value });
                }
            }
            StepKind::Fill | StepKind::Verify => {
                let len = self.below(2 * self.page) + 1;
                let ptr = self.pointer(p, m, len, false);
                let byte = self.pick(&[0, 0x5a, 0xff, 0x11]);
                let cmd = if kind == StepKind::Fill {
                    Cmd::Fill { ptr, len, byte }
                } else {
                    Cmd::Verify { ptr, len, byte }
                };
                self.push(p, cmd);
            }
            StepKind::StoreTag => {
                let op = self.pick(&[
                    TagStoreOp::Stg,
                    TagStoreOp::Stg,
                    TagStoreOp::Stzg,
                    TagStoreOp::St2g,
                    TagStoreOp::Stz2g,
                ]);
                let mut ptr = self.fresh_tag_pointer(p, m, 32);
                if self.chance(3) {
                    // Misaligned: BUS_ADRALN.
                    ptr.offset += 1 + self.below(GRANULE_SIZE - 1);
                }
                let granules = if matches!(op, TagStoreOp::St2g | TagStoreOp::Stz2g) {
                    2
                } else {
                    1
                };
                self.push(p, Cmd::StoreTag { op, ptr });
                if ptr.offset.is_multiple_of(GRANULE_SIZE) {
                    self.record_tags(p, m, &ptr, granules);
                }
            }
            StepKind::SetTag => {
                let granules = 1 + self.below(2 * self.page / GRANULE_SIZE);
                let ptr = self.fresh_tag_pointer(p, m, granules * GRANULE_SIZE);
                self.push(
                    p,
                    Cmd::SetTag {
                        ptr,
                        len: granules * GRANULE_SIZE,
                    },
                );
                self.record_tags(p, m, &ptr, granules);
            }
            _ => {
                let ptr = self.pointer(p, m, 1, false);
                self.push(p, Cmd::Ldg { ptr });
            }
        }
    }

    /// A granule-aligned pointer into mapping `m` with a tag to set: a new
    /// `#T`, or a `t{n}` of this mapping.
    fn fresh_tag_pointer(&mut self, p: usize, m: usize, len: u64) -> PtrRef {
        let name = self.procs[p].maps[m].name;
        let candidates: Vec<u32> = (0..self.tagged.len() as u32)
            .filter(|&t| self.tagged[t as usize].map == name)
            .collect();
        if !candidates.is_empty() && self.chance(40) {
            let t = self.pick(&candidates);
            let granules = self.procs[p].maps[m].pages * self.page / GRANULE_SIZE;
            let start = self.tagged[t as usize].offset / GRANULE_SIZE;
            let extra = self.below(granules.saturating_sub(start).clamp(1, 8));
            return PtrRef::at(PtrName::Tagged(t), extra * GRANULE_SIZE);
        }
        let granules = self.procs[p].maps[m].pages * self.page / GRANULE_SIZE;
        let span = len.div_ceil(GRANULE_SIZE).max(1);
        let granule = if self.chance(4) {
            granules
        } else {
            self.below(granules.saturating_sub(span - 1).max(1))
        };
        PtrRef {
            base: PtrName::Map(name),
            offset: granule * GRANULE_SIZE,
            tag: Some(self.tag()),
        }
    }

    fn make_tagged(&mut self, p: usize, irg: bool) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let map_name = self.procs[p].maps[m].name;
        let granules = self.procs[p].maps[m].pages * self.page / GRANULE_SIZE;
        let g = self.below(granules);
        let name = self.tagged.len() as u32;
        let base = PtrRef::at(PtrName::Map(map_name), g * GRANULE_SIZE);
        if irg {
            let exclude = if self.chance(30) {
                TagMask::from_bits(self.below(0x1_0000) as u16)
            } else {
                TagMask::EMPTY
            };
            self.push(
                p,
                Cmd::Irg {
                    name,
                    ptr: base,
                    exclude,
                },
            );
            self.tagged.push(TaggedModel {
                map: map_name,
                offset: g * GRANULE_SIZE,
            });
        } else {
            let room = (granules - g - 1).min(GranuleOffset::MAX_BYTES / GRANULE_SIZE);
            let step = self.below(room + 1);
            let offset = GranuleOffset::new(step * GRANULE_SIZE)
                .unwrap_or_else(|e| unreachable!("BUG: addg offset out of range: {e}"));
            let tag_offset = TagOffset::new(self.below(16) as u8)
                .unwrap_or_else(|| unreachable!("BUG: addg tag offset above 15"));
            self.push(
                p,
                Cmd::Addg {
                    name,
                    ptr: base,
                    offset,
                    tag_offset,
                },
            );
            self.tagged.push(TaggedModel {
                map: map_name,
                offset: (g + step) * GRANULE_SIZE,
            });
        }
    }

    fn fd(&mut self, p: usize, write_fd: bool) {
        let Some(m) = self.some_map(p) else {
            return;
        };
        let len = 1 + self.below(2 * self.page);
        let mut ptr = self.pointer(p, m, len, false);
        if !self.procs[p].ctrl.tagged_addr && self.chance(80) {
            // A tagged pointer without the ABI is EFAULT: mostly avoid it.
            ptr.tag = Some(Tag::ZERO);
        }
        if write_fd {
            self.push(p, Cmd::WriteFd { ptr, len });
        } else {
            let byte = self.pick(&[0, 0x33, 0xee]);
            self.push(p, Cmd::ReadFd { ptr, len, byte });
        }
    }

    fn ptrace(&mut self, tracer: usize, peek: bool) {
        let n = self.procs.len() as u64;
        let target = self.below(n) as usize;
        let Some(m) = self.some_map(target) else {
            return;
        };
        let ptr = self.pointer(target, m, GRANULE_SIZE, false);
        let target_name = self.procs[target].name;
        if peek {
            let granules = 1 + self.below(40);
            self.push(
                tracer,
                Cmd::PeekTags {
                    target: target_name,
                    ptr,
                    granules,
                },
            );
        } else {
            let count = 1 + self.below(8);
            let tags: Vec<Tag> = (0..count).map(|_| self.tag()).collect();
            self.push(
                tracer,
                Cmd::PokeTags {
                    target: target_name,
                    ptr,
                    tags: tags.clone(),
                },
            );
            // Poked tags land from the pointer's granule on.
            let start = PtrRef {
                tag: tags.first().copied(),
                ..ptr
            };
            if let PtrName::Map(_) = ptr.base {
                self.record_tags(target, m, &start, 1);
            }
        }
    }
}
