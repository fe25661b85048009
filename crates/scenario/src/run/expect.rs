//! Expectations (`expect ...`): observations of the machine, checked against
//! what the line states. They never change the machine: only the
//! [`Machine`] trait's observation methods are called.
//!
//! A failing expectation gives the message of its `FAIL` line, `expected X,
//! got Y`:
//! - `stat`: `expected tag_storage.reserved == 1, got 3`; a counter the
//!   machine does not keep fails, saying so (it cannot be checked);
//! - `invariants`: `expected invariants to hold, got N violated: ...`;
//! - `tags`: the first granule whose tag differs, or `unmapped memory`
//!   where the machine has no tags for the range;
//! - `page`: the states the entry is in (`got private, untagged`), or
//!   that the machine does not model page tables;
//! - `stat NAME` without a comparison always holds: the runner shows the
//!   value ([`observed`]).

use mte::{GRANULE_SIZE, Tag, TaggedPtr};
use thiserror::Error;
use uapi::{Counter, Machine, PageState, Violation};

use crate::run::lower::{Bindings, EvalError, ptr_text};
use lang::ast::{CmpOp, Expect, Names, ProcId, PtrExpr};

/// Why an expectation does not hold; its text is the message of the
/// line's `FAIL` (module doc). `what` is the expectation as written
/// (`p tags buf 0x20 == 5`), after `expected`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExpectError {
    #[error("expected {counter} {} {value}, got nothing: the machine does not keep {counter}", op.symbol())]
    CounterNotKept {
        counter: Counter,
        op: CmpOp,
        value: u64,
    },
    #[error("expected {counter} {} {value}, got {actual}", op.symbol())]
    Counter {
        counter: Counter,
        op: CmpOp,
        value: u64,
        actual: u64,
    },
    #[error("expected invariants to hold, got {} violated: {}", violations.len(), join(violations))]
    Invariants { violations: Vec<Violation> },
    #[error("expected {what}, got no process `{process}` (its spawn or fork failed)")]
    NoProcess { what: String, process: String },
    /// `described` is [`EvalError::describe`] with the script's names.
    #[error("expected {what}, got a {described}")]
    Pointer {
        what: String,
        described: String,
        #[source]
        source: EvalError,
    },
    #[error("expected {what}, got a range past the address space")]
    PastAddressSpace { what: String },
    #[error("expected {what}, got unmapped memory")]
    Unmapped { what: String },
    #[error("expected {what}, got tag {found} at {addr:#x}")]
    Tag { what: String, found: Tag, addr: u64 },
    #[error("expected {what}, got tags for only {got} of its {granules} granules")]
    ShortTags {
        what: String,
        got: usize,
        granules: u64,
    },
    #[error("expected {what}, got nothing: the machine does not model page tables")]
    NoPageTables { what: String },
    /// `found`: the states the entry is in (`private, tagged`), or the
    /// state a negated expectation found.
    #[error("expected {what}, got {found}")]
    PageState { what: String, found: String },
}

fn join(violations: &[Violation]) -> String {
    let texts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// `Ok` when the expectation holds, else why not.
pub fn check<M: Machine + ?Sized>(
    expect: &Expect,
    machine: &M,
    bindings: &Bindings,
    names: &Names,
) -> Result<(), ExpectError> {
    match expect {
        Expect::Stat { counter, op, value } => stat(machine, counter.node, op.node, value.node),
        Expect::Show { .. } => Ok(()),
        Expect::Invariants => {
            let violations = machine.invariant_violations();
            if violations.is_empty() {
                return Ok(());
            }
            Err(ExpectError::Invariants { violations })
        }
        Expect::Tags {
            proc,
            ptr,
            len,
            tag,
        } => {
            let what = format!(
                "{} tags {} {:#x} == {}",
                names.process(proc.node),
                ptr_text(ptr, names),
                len.node,
                tag.node
            );
            let (pid, ptr_value) = operands(&what, proc.node, ptr, bindings, names)?;
            let Some(granules) = granules_of(ptr_value, len.node) else {
                return Err(ExpectError::PastAddressSpace { what });
            };
            if granules == 0 {
                return Ok(());
            }
            let Some(tags) = machine.tags(pid, ptr_value, len.node) else {
                return Err(ExpectError::Unmapped { what });
            };
            // Granules past the range, if a machine gave any, are not asked
            // about.
            let asked = usize::try_from(granules).unwrap_or(usize::MAX);
            if let Some(i) = tags.iter().take(asked).position(|t| *t != tag.node) {
                let addr = ptr_value.addr().granule_base().as_u64() + i as u64 * GRANULE_SIZE;
                return Err(ExpectError::Tag {
                    what,
                    found: tags[i],
                    addr,
                });
            }
            if (tags.len() as u64) < granules {
                return Err(ExpectError::ShortTags {
                    what,
                    got: tags.len(),
                    granules,
                });
            }
            Ok(())
        }
        Expect::Page {
            proc,
            ptr,
            negated,
            state,
        } => {
            let not = if negated.is_some() { "not " } else { "" };
            let what = format!(
                "{} page {} {not}{}",
                names.process(proc.node),
                ptr_text(ptr, names),
                state.node
            );
            let (pid, ptr_value) = operands(&what, proc.node, ptr, bindings, names)?;
            match machine.page_state(pid, ptr_value, state.node) {
                None => Err(ExpectError::NoPageTables { what }),
                Some(is) if is != negated.is_some() => Ok(()),
                Some(_) if negated.is_some() => Err(ExpectError::PageState {
                    what,
                    found: state.node.to_string(),
                }),
                Some(_) => Err(ExpectError::PageState {
                    what,
                    found: states_text(machine, pid, ptr_value),
                }),
            }
        }
    }
}

fn stat<M: Machine + ?Sized>(
    machine: &M,
    counter: Counter,
    op: CmpOp,
    value: u64,
) -> Result<(), ExpectError> {
    match machine.counter(counter) {
        None => Err(ExpectError::CounterNotKept { counter, op, value }),
        Some(actual) if op.holds(actual, value) => Ok(()),
        Some(actual) => Err(ExpectError::Counter {
            counter,
            op,
            value,
            actual,
        }),
    }
}

/// The process and address an expectation observes.
fn operands(
    what: &str,
    proc: ProcId,
    ptr: &PtrExpr,
    bindings: &Bindings,
    names: &Names,
) -> Result<(uapi::Pid, TaggedPtr), ExpectError> {
    let Some(pid) = bindings.process(proc) else {
        return Err(ExpectError::NoProcess {
            what: what.to_owned(),
            process: names.process(proc).to_owned(),
        });
    };
    let ptr = bindings.eval(ptr).map_err(|source| ExpectError::Pointer {
        what: what.to_owned(),
        described: source.describe(names),
        source,
    })?;
    Ok((pid, ptr))
}

/// Granules of `len` bytes from `ptr`: from the granule holding the first
/// byte to the one holding the last. `None` past the 56-bit address space.
fn granules_of(ptr: TaggedPtr, len: u64) -> Option<u64> {
    if len == 0 {
        return Some(0);
    }
    let first = ptr.addr().granule_base().as_u64();
    let last = ptr.addr().as_u64().checked_add(len - 1)?;
    if last > mte::VirtAddr::MAX.as_u64() {
        return None;
    }
    Some((last - first) / GRANULE_SIZE + 1)
}

/// Every state the entry is in (`private, tagged`), for a failure message.
fn states_text<M: Machine + ?Sized>(machine: &M, pid: uapi::Pid, ptr: TaggedPtr) -> String {
    let states: Vec<&str> = PageState::ALL
        .into_iter()
        .filter(|&s| machine.page_state(pid, ptr, s) == Some(true))
        .map(PageState::name)
        .collect();
    match states.is_empty() {
        true => "none of the states".to_owned(),
        false => states.join(", "),
    }
}

/// What an expectation saw that the verbose trace shows beside its verdict:
/// the counter's value for `expect stat`.
pub fn observed<M: Machine + ?Sized>(expect: &Expect, machine: &M) -> Option<u64> {
    match expect {
        Expect::Stat { counter, .. } | Expect::Show { counter } => machine.counter(counter.node),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granules_cover_first_to_last_byte() {
        let p = |raw| TaggedPtr::from_raw(raw);
        assert_eq!(granules_of(p(0x1000), 0), Some(0));
        assert_eq!(granules_of(p(0x1000), 16), Some(1));
        assert_eq!(granules_of(p(0x1000), 17), Some(2));
        // 0x100f..0x1010 straddles two granules.
        assert_eq!(granules_of(p(0x100f), 2), Some(2));
        // The tag is not part of the address.
        assert_eq!(granules_of(p(0x0500_0000_0000_1000), 0x4000), Some(0x400));
        assert_eq!(granules_of(p(0x00ff_ffff_ffff_fff0), 16), Some(1));
        assert_eq!(granules_of(p(0x00ff_ffff_ffff_fff0), 17), None);
    }
}
