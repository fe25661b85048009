//! Schedules: the printable record of every scheduling decision of a program.
//!
//! A schedule lists, in order, the CPU chosen at each *decision*: each moment
//! when two or more tasks were runnable (see [`crate::executor`]). Moments with
//! one runnable task are not decisions and leave no trace, so a single-CPU
//! program has the empty schedule. A program made of several runs (one per
//! `parallel` block) has one schedule: the runs' decisions concatenated.
//!
//! # Text format
//!
//! ```text
//! schedule := "-"                      the empty schedule ("" is accepted too)
//!           | item ("." item)*
//! item     := cpu ("*" count)?         `count` copies of `cpu`, count >= 1
//! cpu      := decimal digits           fits in u32
//! count    := decimal digits
//! ```
//!
//! `0.1.1.1.0` is printed `0.1*3.0`: [`Display`](fmt::Display) compresses runs
//! of three or more equal choices (where `c*n` is never longer than the
//! spelled-out run) and prints the empty schedule as `-` so it is visible on a
//! command line. Parsing accepts any mix of both spellings, leading zeros
//! included; nothing else (no spaces, no signs). Parsing never panics; errors
//! name the 1-based character column and the problem.
//!
//! Parsing accepts at most [`Schedule::MAX_LEN`] decisions, so a hostile
//! `0*99999999999` is an error, not an allocation. (A recorder can produce a
//! longer schedule only from a program of more than 4 Mi decisions, beyond
//! four runs at the default step limit; it prints but does not parse.)

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::cpu::CpuId;

/// The CPUs chosen at a program's decisions, in order.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Schedule(Vec<CpuId>);

impl Schedule {
    /// The longest schedule that parses (4 Mi decisions, 16 MiB).
    pub const MAX_LEN: usize = 1 << 22;

    pub const fn new() -> Self {
        Self(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[CpuId] {
        &self.0
    }

    pub fn push(&mut self, cpu: CpuId) {
        self.0.push(cpu);
    }

    pub fn iter(&self) -> impl Iterator<Item = CpuId> + '_ {
        self.0.iter().copied()
    }
}

impl From<Vec<CpuId>> for Schedule {
    fn from(choices: Vec<CpuId>) -> Self {
        Self(choices)
    }
}

impl FromIterator<CpuId> for Schedule {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let mut rest = self.0.as_slice();
        let mut first = true;
        while let Some(&cpu) = rest.first() {
            let run = rest.iter().take_while(|&&c| c == cpu).count();
            if !first {
                f.write_str(".")?;
            }
            first = false;
            // `c*3` is never longer than `c.c.c`; for two it can be (`10*2`).
            if run >= 3 {
                write!(f, "{}*{run}", cpu.as_u32())?;
            } else {
                for i in 0..run {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{}", cpu.as_u32())?;
                }
            }
            rest = &rest[run..];
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
    #[error("expected a CPU number, found {found}")]
    ExpectedCpu { found: Found },
    #[error("expected `.`, `*` or the end after a CPU number, found {found}")]
    ExpectedSeparator { found: Found },
    #[error("expected a repeat count after `*`, found {found}")]
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
        Parser::new(text).schedule()
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

    fn schedule(mut self) -> Result<Schedule, ScheduleParseError> {
        let mut choices = Vec::new();
        loop {
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
                let Some((start, digits)) = self.digits() else {
                    return Err(self.error(
                        self.pos,
                        ScheduleParseErrorKind::ExpectedCount { found: self.peek() },
                    ));
                };
                let too_long = ScheduleParseErrorKind::TooLong {
                    max: Schedule::MAX_LEN,
                };
                count = digits
                    .parse::<usize>()
                    .map_err(|_| self.error(start, too_long.clone()))?;
                if count == 0 {
                    return Err(self.error(start, ScheduleParseErrorKind::ZeroCount));
                }
                if count > Schedule::MAX_LEN - choices.len() {
                    return Err(self.error(start, too_long));
                }
                match self.peek() {
                    Found::End | Found::Char('.') => {}
                    found => {
                        return Err(
                            self.error(self.pos, ScheduleParseErrorKind::ExpectedDot { found })
                        );
                    }
                }
            } else if choices.len() == Schedule::MAX_LEN {
                return Err(self.error(
                    start,
                    ScheduleParseErrorKind::TooLong {
                        max: Schedule::MAX_LEN,
                    },
                ));
            }
            choices.extend(core::iter::repeat_n(CpuId::new(cpu), count));
            match self.peek() {
                Found::End => return Ok(Schedule(choices)),
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
            "schedule, column 3: expected a CPU number, found 'x'"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn display_then_parse_round_trips(
            cpus in prop::collection::vec(
                prop_oneof![4 => 0u32..3, 1 => any::<u32>()], 0..40)
        ) {
            let s = sched(&cpus);
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
