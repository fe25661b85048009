//! Schedules: the printable record of every scheduling decision of a program.
//!
//! A schedule lists, in order, what was chosen at each *decision*: each
//! moment when two or more tasks were runnable (see [`crate::executor`]).
//! Moments with one runnable task are not decisions and leave no trace, so a
//! single-CPU program has the empty schedule. A program made of several runs
//! (one per `parallel` block) has one schedule: the runs' decisions
//! concatenated.
//!
//! Each decision is a [`Choice`]: either a named CPU, or [`Choice::Stay`],
//! "keep running the CPU that ran last if it is runnable, else the lowest
//! runnable CPU" (the rule a run follows when nothing preempts it). A
//! [`crate::Recorder`] writes `Stay` for every decision that followed that
//! rule, so a schedule names only the CPUs of the preemptions and of the
//! decisions that deviated from the rule (a choice-index encoding); runs of
//! `Stay` print as one count. A run that preempts rarely (the default
//! chooser of `mtesim run`, [`crate::Sticky`]) thus prints a few dozen
//! characters however many decisions it made.
//!
//! # Text format
//!
//! ```text
//! schedule := "-"                      the empty schedule ("" is accepted too)
//!           | "..."                    the empty prefix
//!           | item ("." item)* ["..."]
//! item     := cpu ("*" count)?         `count` decisions choosing `cpu`, count >= 1
//!           | "+" count                `count` decisions of `Stay`, count >= 1
//! cpu      := decimal digits           fits in u32
//! count    := decimal digits
//! ```
//!
//! `+3.1.+2.0.+7` reads: three decisions keep the running CPU, the fourth
//! switches to CPU 1, two more keep CPU 1 running, the seventh switches to
//! CPU 0, seven more keep running. [`Display`](fmt::Display) compresses runs
//! of three or more equal CPUs (`0.1.1.1.0` is `0.1*3.0`) and every run of
//! `Stay` (`+n`), and prints the empty schedule as `-` so it is visible on a
//! command line. A trailing `...` makes the schedule a *prefix*: a replay
//! follows it, then picks the lowest runnable CPU at every further decision
//! (instead of failing when the schedule runs out; see
//! [`crate::Replay::new`]). Parsing accepts any mix of the spellings, leading
//! zeros included; nothing else (no spaces, no signs). Parsing never panics;
//! errors name the 1-based character column and the problem.
//!
//! Parsing accepts at most [`Schedule::MAX_LEN`] decisions, so a hostile
//! `0*99999999999` is an error, not an allocation. (A recorder can produce a
//! longer schedule only from a program of more than 4 Mi decisions, beyond
//! four runs at the default step limit; it prints but does not parse.)

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::chooser::ChoicePoint;
use crate::cpu::CpuId;

/// What one decision chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    /// Keep running the CPU that ran last if it is runnable, else the lowest
    /// runnable CPU.
    Stay,
    /// This CPU.
    Cpu(CpuId),
}

impl Choice {
    /// The CPU [`Choice::Stay`] stands for at `point`.
    pub fn stay_at(point: &ChoicePoint<'_>) -> CpuId {
        match point.previous {
            Some(previous) if point.runnable.contains(&previous) => previous,
            _ => point.runnable[0],
        }
    }

    /// The CPU this choice picks at `point` (not necessarily runnable for
    /// [`Choice::Cpu`]).
    pub fn resolve(self, point: &ChoicePoint<'_>) -> CpuId {
        match self {
            Choice::Stay => Self::stay_at(point),
            Choice::Cpu(cpu) => cpu,
        }
    }

    /// The canonical record of choosing `cpu` at `point`: [`Choice::Stay`]
    /// when that is what the rule picks.
    pub fn of(point: &ChoicePoint<'_>, cpu: CpuId) -> Self {
        if Self::stay_at(point) == cpu {
            Choice::Stay
        } else {
            Choice::Cpu(cpu)
        }
    }
}

/// What was chosen at a program's decisions, in order, and whether the
/// schedule is a prefix (printed with a trailing `...`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Schedule {
    choices: Vec<Choice>,
    prefix: bool,
}

impl Schedule {
    /// The longest schedule that parses (4 Mi decisions).
    pub const MAX_LEN: usize = 1 << 22;

    pub const fn new() -> Self {
        Self {
            choices: Vec::new(),
            prefix: false,
        }
    }

    pub fn len(&self) -> usize {
        self.choices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }

    pub fn as_slice(&self) -> &[Choice] {
        &self.choices
    }

    /// Appends an explicit choice of `cpu`.
    pub fn push(&mut self, cpu: CpuId) {
        self.choices.push(Choice::Cpu(cpu));
    }

    /// Appends the choice of `cpu` at `point`, canonically ([`Choice::of`]).
    pub fn record(&mut self, point: &ChoicePoint<'_>, cpu: CpuId) {
        self.choices.push(Choice::of(point, cpu));
    }

    pub fn iter(&self) -> impl Iterator<Item = Choice> + '_ {
        self.choices.iter().copied()
    }

    /// A replay of a prefix goes on with the lowest runnable CPU when the
    /// schedule runs out.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// This schedule as a prefix (`...`) or as a whole schedule.
    pub fn with_prefix(mut self, prefix: bool) -> Self {
        self.prefix = prefix;
        self
    }

    /// The decisions that name a CPU other than what the rule of
    /// [`Choice::Stay`] picks (what a schedule costs to print).
    pub fn deviations(&self) -> usize {
        self.choices
            .iter()
            .filter(|c| matches!(c, Choice::Cpu(_)))
            .count()
    }

    /// The first `len` decisions.
    pub fn truncated(&self, len: usize) -> Self {
        Self {
            choices: self.choices[..len.min(self.choices.len())].to_vec(),
            prefix: self.prefix,
        }
    }
}

impl From<Vec<CpuId>> for Schedule {
    fn from(choices: Vec<CpuId>) -> Self {
        choices.into_iter().collect()
    }
}

impl From<Vec<Choice>> for Schedule {
    fn from(choices: Vec<Choice>) -> Self {
        Self {
            choices,
            prefix: false,
        }
    }
}

impl FromIterator<CpuId> for Schedule {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> Self {
        Self {
            choices: iter.into_iter().map(Choice::Cpu).collect(),
            prefix: false,
        }
    }
}

impl FromIterator<Choice> for Schedule {
    fn from_iter<I: IntoIterator<Item = Choice>>(iter: I) -> Self {
        Self {
            choices: iter.into_iter().collect(),
            prefix: false,
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.choices.is_empty() {
            return f.write_str(if self.prefix { "..." } else { "-" });
        }
        let mut rest = self.choices.as_slice();
        let mut first = true;
        while let Some(&choice) = rest.first() {
            let run = rest.iter().take_while(|&&c| c == choice).count();
            if !first {
                f.write_str(".")?;
            }
            first = false;
            match choice {
                Choice::Stay => write!(f, "+{run}")?,
                // `c*3` is never longer than `c.c.c`; for two it can be (`10*2`).
                Choice::Cpu(cpu) if run >= 3 => write!(f, "{}*{run}", cpu.as_u32())?,
                Choice::Cpu(cpu) => {
                    for i in 0..run {
                        if i > 0 {
                            f.write_str(".")?;
                        }
                        write!(f, "{}", cpu.as_u32())?;
                    }
                }
            }
            rest = &rest[run..];
        }
        if self.prefix {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// What the parser found where it expected something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    End,
    Char(char),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::End => f.write_str("end of input"),
            Found::Char(c) => write!(f, "{c:?}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScheduleParseErrorKind {
    #[error("expected a CPU number or `+`, found {found}")]
    ExpectedCpu { found: Found },
    #[error("expected `.`, `*` or the end after a CPU number, found {found}")]
    ExpectedSeparator { found: Found },
    #[error("expected a repeat count after `*` or `+`, found {found}")]
    ExpectedCount { found: Found },
    #[error("expected `.` or the end after a repeat count, found {found}")]
    ExpectedDot { found: Found },
    #[error("CPU number {digits} does not fit in 32 bits")]
    CpuOutOfRange { digits: String },
    #[error("repeat count must be at least 1")]
    ZeroCount,
    #[error("schedule is longer than {max} decisions")]
    TooLong { max: usize },
}

/// A malformed schedule string: where (1-based character column) and what.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("schedule, column {column}: {kind}")]
pub struct ScheduleParseError {
    pub column: usize,
    pub kind: ScheduleParseErrorKind,
}

impl FromStr for Schedule {
    type Err = ScheduleParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text == "-" {
            return Ok(Self::new());
        }
        let (body, prefix) = match text.strip_suffix("...") {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.is_empty() {
            return Ok(Self::new().with_prefix(true));
        }
        Ok(Parser::new(body).schedule()?.with_prefix(prefix))
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Found {
        self.chars
            .get(self.pos)
            .map_or(Found::End, |&c| Found::Char(c))
    }

    fn error(&self, column_of: usize, kind: ScheduleParseErrorKind) -> ScheduleParseError {
        ScheduleParseError {
            column: column_of + 1,
            kind,
        }
    }

    /// Consumes a run of ASCII digits; `None` (nothing consumed) if there is none.
    fn digits(&mut self) -> Option<(usize, String)> {
        let start = self.pos;
        while matches!(self.peek(), Found::Char(c) if c.is_ascii_digit()) {
            self.pos += 1;
        }
        (self.pos > start).then(|| (start, self.chars[start..self.pos].iter().collect()))
    }

    /// A repeat count (after `*` or `+`) that keeps the schedule within
    /// [`Schedule::MAX_LEN`].
    fn count(&mut self, so_far: usize) -> Result<usize, ScheduleParseError> {
        let Some((start, digits)) = self.digits() else {
            return Err(self.error(
                self.pos,
                ScheduleParseErrorKind::ExpectedCount { found: self.peek() },
            ));
        };
        let too_long = ScheduleParseErrorKind::TooLong {
            max: Schedule::MAX_LEN,
        };
        let count = digits
            .parse::<usize>()
            .map_err(|_| self.error(start, too_long.clone()))?;
        if count == 0 {
            return Err(self.error(start, ScheduleParseErrorKind::ZeroCount));
        }
        if count > Schedule::MAX_LEN - so_far {
            return Err(self.error(start, too_long));
        }
        match self.peek() {
            Found::End | Found::Char('.') => Ok(count),
            found => Err(self.error(self.pos, ScheduleParseErrorKind::ExpectedDot { found })),
        }
    }

    fn schedule(mut self) -> Result<Schedule, ScheduleParseError> {
        let mut choices = Vec::new();
        loop {
            if self.peek() == Found::Char('+') {
                self.pos += 1;
                let count = self.count(choices.len())?;
                choices.extend(core::iter::repeat_n(Choice::Stay, count));
            } else {
                let Some((start, digits)) = self.digits() else {
                    return Err(self.error(
                        self.pos,
                        ScheduleParseErrorKind::ExpectedCpu { found: self.peek() },
                    ));
                };
                let cpu = digits.parse::<u32>().map_err(|_| {
                    self.error(
                        start,
                        ScheduleParseErrorKind::CpuOutOfRange {
                            digits: digits.clone(),
                        },
                    )
                })?;
                let mut count = 1usize;
                if self.peek() == Found::Char('*') {
                    self.pos += 1;
                    count = self.count(choices.len())?;
                } else if choices.len() == Schedule::MAX_LEN {
                    return Err(self.error(
                        start,
                        ScheduleParseErrorKind::TooLong {
                            max: Schedule::MAX_LEN,
                        },
                    ));
                }
                choices.extend(core::iter::repeat_n(Choice::Cpu(CpuId::new(cpu)), count));
            }
            match self.peek() {
                Found::End => return Ok(Schedule::from(choices)),
                Found::Char('.') => self.pos += 1,
                found => {
                    return Err(self.error(
                        self.pos,
                        ScheduleParseErrorKind::ExpectedSeparator { found },
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sched(cpus: &[u32]) -> Schedule {
        cpus.iter().copied().map(CpuId::new).collect()
    }

    fn err(text: &str) -> ScheduleParseError {
        text.parse::<Schedule>().expect_err(text)
    }

    #[test]
    fn display_compresses_runs_of_three_or_more() {
        assert_eq!(sched(&[]).to_string(), "-");
        assert_eq!(sched(&[0]).to_string(), "0");
        assert_eq!(sched(&[0, 1, 1, 0]).to_string(), "0.1.1.0");
        assert_eq!(sched(&[0, 1, 1, 1, 0]).to_string(), "0.1*3.0");
        assert_eq!(sched(&[12, 12, 3, 3, 3, 3]).to_string(), "12.12.3*4");
    }

    #[test]
    fn stays_print_as_counts_and_prefixes_end_in_dots() {
        let s: Schedule = [
            Choice::Stay,
            Choice::Stay,
            Choice::Stay,
            Choice::Cpu(CpuId::new(1)),
            Choice::Stay,
            Choice::Cpu(CpuId::new(0)),
            Choice::Cpu(CpuId::new(0)),
        ]
        .into_iter()
        .collect();
        assert_eq!(s.to_string(), "+3.1.+1.0.0");
        assert_eq!(s.deviations(), 3);
        assert_eq!("+3.1.+1.0.0".parse::<Schedule>().unwrap(), s);
        let prefix = "+3.1...".parse::<Schedule>().unwrap();
        assert!(prefix.is_prefix());
        assert_eq!(prefix.len(), 4);
        assert_eq!(prefix.to_string(), "+3.1...");
        let empty = "...".parse::<Schedule>().unwrap();
        assert!(empty.is_prefix() && empty.is_empty());
        assert_eq!(empty.to_string(), "...");
        assert_eq!(err("+0").kind, ScheduleParseErrorKind::ZeroCount);
        assert_eq!(
            err("+").kind,
            ScheduleParseErrorKind::ExpectedCount { found: Found::End }
        );
        assert_eq!(err("0.1....").column, 5);
    }

    #[test]
    fn stay_keeps_the_previous_cpu_else_the_lowest() {
        let runnable = [CpuId::new(0), CpuId::new(2)];
        let at = |previous| ChoicePoint {
            runnable: &runnable,
            previous,
            steps: &[],
        };
        assert_eq!(Choice::stay_at(&at(None)), CpuId::new(0));
        assert_eq!(Choice::stay_at(&at(Some(CpuId::new(2)))), CpuId::new(2));
        // cpu1 blocked or finished: the lowest runnable.
        assert_eq!(Choice::stay_at(&at(Some(CpuId::new(1)))), CpuId::new(0));
        assert_eq!(
            Choice::of(&at(Some(CpuId::new(2))), CpuId::new(0)),
            Choice::Cpu(CpuId::new(0))
        );
        assert_eq!(Choice::of(&at(None), CpuId::new(0)), Choice::Stay);
    }

    #[test]
    fn parses_both_spellings() {
        assert_eq!("".parse::<Schedule>().unwrap(), sched(&[]));
        assert_eq!("-".parse::<Schedule>().unwrap(), sched(&[]));
        assert_eq!(
            "0.1*3.0".parse::<Schedule>().unwrap(),
            sched(&[0, 1, 1, 1, 0])
        );
        assert_eq!("1*1.1*2".parse::<Schedule>().unwrap(), sched(&[1, 1, 1]));
        assert_eq!("007".parse::<Schedule>().unwrap(), sched(&[7]));
        assert_eq!(
            "4294967295".parse::<Schedule>().unwrap(),
            sched(&[u32::MAX])
        );
    }

    #[test]
    fn malformed_strings_name_column_and_problem() {
        use ScheduleParseErrorKind as K;
        let e = err("0..1");
        assert_eq!(
            (e.column, e.kind),
            (
                3,
                K::ExpectedCpu {
                    found: Found::Char('.')
                }
            )
        );
        let e = err(".0");
        assert_eq!(
            (e.column, e.kind),
            (
                1,
                K::ExpectedCpu {
                    found: Found::Char('.')
                }
            )
        );
        let e = err("0.1.");
        assert_eq!(
            (e.column, e.kind),
            (5, K::ExpectedCpu { found: Found::End })
        );
        let e = err("0,1");
        assert_eq!(
            (e.column, e.kind),
            (
                2,
                K::ExpectedSeparator {
                    found: Found::Char(',')
                }
            )
        );
        let e = err("0.1*");
        assert_eq!(
            (e.column, e.kind),
            (5, K::ExpectedCount { found: Found::End })
        );
        let e = err("1*0");
        assert_eq!((e.column, e.kind), (3, K::ZeroCount));
        let e = err("1*2*3");
        assert_eq!(
            (e.column, e.kind),
            (
                4,
                K::ExpectedDot {
                    found: Found::Char('*')
                }
            )
        );
        let e = err("0.4294967296");
        assert_eq!(
            (e.column, e.kind),
            (
                3,
                K::CpuOutOfRange {
                    digits: "4294967296".into()
                }
            )
        );
        let e = err("0.1*99999999999999999999999");
        assert_eq!(
            (e.column, e.kind),
            (
                5,
                K::TooLong {
                    max: Schedule::MAX_LEN
                }
            )
        );
        // 4 Mi + 1 decisions: over the cap by one.
        let e = err(&format!("0*{}.1", Schedule::MAX_LEN));
        assert_eq!(
            (e.column, e.kind),
            (
                11,
                K::TooLong {
                    max: Schedule::MAX_LEN
                }
            )
        );
        // Columns count characters, not bytes.
        let e = err("0.é");
        assert_eq!(
            (e.column, e.kind),
            (
                3,
                K::ExpectedCpu {
                    found: Found::Char('é')
                }
            )
        );
        let e = err(" 0");
        assert_eq!(e.column, 1);
        assert_eq!(
            err("0.x").to_string(),
            "schedule, column 3: expected a CPU number or `+`, found 'x'"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn display_then_parse_round_trips(
            cpus in prop::collection::vec(
                prop_oneof![4 => 0u32..3, 1 => any::<u32>(), 3 => Just(u32::MAX)], 0..40),
            prefix in any::<bool>(),
        ) {
            // u32::MAX stands for a `Stay` here.
            let s: Schedule = cpus
                .iter()
                .map(|&c| if c == u32::MAX { Choice::Stay } else { Choice::Cpu(CpuId::new(c)) })
                .collect::<Schedule>()
                .with_prefix(prefix);
            let text = s.to_string();
            prop_assert_eq!(text.parse::<Schedule>().unwrap(), s);
        }

        #[test]
        fn parsing_any_text_never_panics(text in "[0-9.*\\-, a]{0,24}|\\PC{0,12}") {
            if let Ok(s) = text.parse::<Schedule>() {
                // What parses re-prints to something that parses to the same.
                prop_assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
            }
        }
    }
}
