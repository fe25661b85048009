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
//! - `page`: the state found (`got not tagged`), or that the machine does
//!   not model page tables.

use mte::{GRANULE_SIZE, TaggedPtr};
use uapi::{Counter, Machine, PageState};

use crate::ast::{CmpOp, Expect, Names, ProcId, PtrExpr};
use crate::run::lower::{Bindings, ptr_text};

/// `Ok` when the expectation holds, else the failure message.
pub fn check<M: Machine + ?Sized>(
    expect: &Expect,
    machine: &M,
    bindings: &Bindings,
    names: &Names,
) -> Result<(), String> {
    match expect {
        Expect::Stat { counter, op, value } => stat(machine, counter.node, op.node, value.node),
        Expect::Invariants => {
            let violations = machine.invariant_violations();
            if violations.is_empty() {
                return Ok(());
            }
            Err(format!(
                "expected invariants to hold, got {} violated: {}",
                violations.len(),
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
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
            let granules = granules_of(ptr_value, len.node)
                .ok_or_else(|| format!("expected {what}, got a range past the address space"))?;
            if granules == 0 {
                return Ok(());
            }
            let Some(tags) = machine.tags(pid, ptr_value, len.node) else {
                return Err(format!("expected {what}, got unmapped memory"));
            };
            // Granules past the range, if a machine gave any, are not asked
            // about.
            let asked = usize::try_from(granules).unwrap_or(usize::MAX);
            if let Some(i) = tags.iter().take(asked).position(|t| *t != tag.node) {
                let at = ptr_value.addr().granule_base().as_u64() + i as u64 * GRANULE_SIZE;
                return Err(format!("expected {what}, got tag {} at {at:#x}", tags[i]));
            }
            if (tags.len() as u64) < granules {
                return Err(format!(
                    "expected {what}, got tags for only {} of its {granules} granules",
                    tags.len()
                ));
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
                None => Err(format!(
                    "expected {what}, got nothing: the machine does not model page tables"
                )),
                Some(is) if is != negated.is_some() => Ok(()),
                Some(is) => Err(format!(
                    "expected {what}, got {}",
                    state_text(is, state.node)
                )),
            }
        }
    }
}

fn stat<M: Machine + ?Sized>(
    machine: &M,
    counter: Counter,
    op: CmpOp,
    value: u64,
) -> Result<(), String> {
    let what = format!("{counter} {} {value}", op.symbol());
    match machine.counter(counter) {
        None => Err(format!(
            "expected {what}, got nothing: the machine does not keep {counter}"
        )),
        Some(actual) if op.holds(actual, value) => Ok(()),
        Some(actual) => Err(format!("expected {what}, got {actual}")),
    }
}

/// The process and address an expectation observes.
fn operands(
    what: &str,
    proc: ProcId,
    ptr: &PtrExpr,
    bindings: &Bindings,
    names: &Names,
) -> Result<(uapi::Pid, TaggedPtr), String> {
    let Some(pid) = bindings.process(proc) else {
        return Err(format!(
            "expected {what}, got no process `{}` (its spawn or fork failed)",
            names.process(proc)
        ));
    };
    let ptr = bindings
        .eval(ptr)
        .map_err(|e| format!("expected {what}, got a {}", e.describe(names)))?;
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

fn state_text(is: bool, state: PageState) -> String {
    if is {
        state.to_string()
    } else {
        format!("not {state}")
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
