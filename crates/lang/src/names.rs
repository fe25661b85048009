//! Name binding (`docs/language.md`, "Lexical rules").
//!
//! Owns the one namespace of processes and pointers while a file is parsed,
//! and hands out the dense ids of [`crate::ast`]:
//!
//! - `spawn P` and `P fork Q` bind a process to the next [`ProcId`]; a
//!   process name is never rebound (not even after `exit`);
//! - `mmap`, `irg` and `addg` bind a pointer; rebinding a pointer name
//!   replaces its value, so outside `parallel` it reuses the name's
//!   [`PtrSlot`];
//! - a name is one kind for ever: a process name used as a pointer, or the
//!   other way round, is an error;
//! - a name must be bound on an earlier line: a line's own binding is made
//!   after its uses are resolved (`p irg t t` reads the old `t`).
//!
//! Parallel blocks: every line of a block sees the bindings as they were at
//! `parallel`; the block's own bindings are collected and made visible at
//! `end`, in line order. A pointer bound in a block gets a fresh slot (so
//! lines still reading the old binding never see the new value), and a name
//! may be bound by at most one line of a block, since which of two bindings
//! would win depends on the interleaving.

use std::collections::BTreeMap;

use crate::ast::{Names, ProcId, PtrSlot};
use crate::error::{ErrorKind, NameKind};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Binding {
    Process(ProcId),
    Pointer(PtrSlot),
}

impl Binding {
    fn kind(self) -> NameKind {
        match self {
            Binding::Process(_) => NameKind::Process,
            Binding::Pointer(_) => NameKind::Pointer,
        }
    }
}

/// The bindings visible at the current line.
#[derive(Default)]
pub struct Scope<'a> {
    bound: BTreeMap<&'a str, Binding>,
    names: Names,
    /// `Some` inside a parallel block: the bindings its lines made so far.
    block: Option<Vec<(&'a str, Binding)>>,
}

impl<'a> Scope<'a> {
    pub fn new() -> Scope<'a> {
        Scope::default()
    }

    /// The process `name` denotes.
    pub fn process(&self, name: &'a str) -> Result<ProcId, ErrorKind> {
        match self.lookup(name, NameKind::Process)? {
            Binding::Process(id) => Ok(id),
            Binding::Pointer(_) => Err(wrong_kind(name, NameKind::Pointer, NameKind::Process)),
        }
    }

    /// The pointer slot `name` denotes.
    pub fn pointer(&self, name: &'a str) -> Result<PtrSlot, ErrorKind> {
        match self.lookup(name, NameKind::Pointer)? {
            Binding::Pointer(slot) => Ok(slot),
            Binding::Process(_) => Err(wrong_kind(name, NameKind::Process, NameKind::Pointer)),
        }
    }

    /// Whether a parallel block is open (its lines see pending bindings).
    pub fn in_block(&self) -> bool {
        self.block.is_some()
    }

    /// Whether `name` is a bound process (for telling an unknown statement
    /// from a command of an unbound process).
    pub fn is_process(&self, name: &str) -> bool {
        matches!(self.bound.get(name), Some(Binding::Process(_)))
    }

    fn lookup(&self, name: &'a str, kind: NameKind) -> Result<Binding, ErrorKind> {
        if let Some(&binding) = self.bound.get(name) {
            return Ok(binding);
        }
        if self.pending(name).is_some() {
            return Err(ErrorKind::BoundInBlock { name: name.into() });
        }
        Err(ErrorKind::Unbound {
            name: name.into(),
            kind,
            hint: match kind {
                NameKind::Process => " (by `spawn` or `fork`)",
                NameKind::Pointer => " (by `mmap`, `irg` or `addg`)",
            },
        })
    }

    fn pending(&self, name: &str) -> Option<Binding> {
        let block = self.block.as_ref()?;
        block.iter().find(|(n, _)| *n == name).map(|&(_, b)| b)
    }

    /// Checks that `name` may be bound as `kind` here, without binding it,
    /// so the error points at the name before later tokens are read.
    pub fn check_bindable(&self, name: &str, kind: NameKind) -> Result<(), ErrorKind> {
        if self.pending(name).is_some() {
            return Err(ErrorKind::BoundTwiceInBlock { name: name.into() });
        }
        match (self.bound.get(name).copied(), kind) {
            (None, _) | (Some(Binding::Pointer(_)), NameKind::Pointer) => Ok(()),
            (Some(Binding::Process(_)), NameKind::Process) => {
                Err(ErrorKind::ProcessRebound { name: name.into() })
            }
            (Some(actual), _) => Err(wrong_kind(name, actual.kind(), kind)),
        }
    }

    /// The id [`Scope::bind_process`] will give next.
    pub fn next_process(&self) -> ProcId {
        ProcId(next_index(self.names.processes.len()))
    }

    /// The slot [`Scope::bind_pointer`] will give `name` now.
    pub fn next_pointer(&self, name: &str) -> PtrSlot {
        match (self.block.is_none(), self.bound.get(name)) {
            (true, Some(&Binding::Pointer(slot))) => slot,
            _ => PtrSlot(next_index(self.names.pointers.len())),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Binds `name` to a new process.
    pub fn bind_process(&mut self, name: &'a str) -> Result<ProcId, ErrorKind> {
        self.check_bindable(name, NameKind::Process)?;
        let id = ProcId(next_index(self.names.processes.len()));
        self.names.processes.push(name.into());
        self.bind(name, Binding::Process(id));
        Ok(id)
    }

    /// Binds `name` to a pointer slot: the name's own slot when rebinding
    /// outside a block, else a new one.
    pub fn bind_pointer(&mut self, name: &'a str) -> Result<PtrSlot, ErrorKind> {
        self.check_bindable(name, NameKind::Pointer)?;
        if self.block.is_none()
            && let Some(&Binding::Pointer(slot)) = self.bound.get(name)
        {
            return Ok(slot);
        }
        let slot = PtrSlot(next_index(self.names.pointers.len()));
        self.names.pointers.push(name.into());
        self.bind(name, Binding::Pointer(slot));
        Ok(slot)
    }

    fn bind(&mut self, name: &'a str, binding: Binding) {
        match &mut self.block {
            Some(block) => block.push((name, binding)),
            None => {
                self.bound.insert(name, binding);
            }
        }
    }

    /// At `parallel`.
    pub fn open_block(&mut self) {
        assert!(self.block.is_none(), "BUG: parallel blocks do not nest");
        self.block = Some(Vec::new());
    }

    /// At `end`: the block's bindings become visible.
    pub fn close_block(&mut self) {
        let block = self.block.take().expect("BUG: `end` outside a block");
        for (name, binding) in block {
            self.bound.insert(name, binding);
        }
    }

    pub fn into_names(self) -> Names {
        self.names
    }
}

fn wrong_kind(name: &str, actual: NameKind, expected: NameKind) -> ErrorKind {
    ErrorKind::WrongKind {
        name: name.into(),
        actual,
        expected,
    }
}

/// Ids are `u32`; a file under 4 GiB cannot bind more names than that.
fn next_index(len: usize) -> u32 {
    u32::try_from(len).expect("BUG: more than 2^32 names in a file under 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_get_dense_ids_and_are_never_rebound() {
        let mut scope = Scope::new();
        assert_eq!(scope.bind_process("p"), Ok(ProcId(0)));
        assert_eq!(scope.bind_process("q"), Ok(ProcId(1)));
        assert_eq!(scope.process("q"), Ok(ProcId(1)));
        assert_eq!(
            scope.bind_process("p"),
            Err(ErrorKind::ProcessRebound { name: "p".into() })
        );
    }

    #[test]
    fn rebinding_a_pointer_outside_a_block_reuses_its_slot() {
        // Spec: "Binding a bound pointer name again replaces it".
        let mut scope = Scope::new();
        assert_eq!(scope.bind_pointer("a"), Ok(PtrSlot(0)));
        assert_eq!(scope.next_pointer("b"), PtrSlot(1));
        assert_eq!(scope.bind_pointer("b"), Ok(PtrSlot(1)));
        assert_eq!(scope.next_pointer("a"), PtrSlot(0));
        assert_eq!(scope.bind_pointer("a"), Ok(PtrSlot(0)));
        assert_eq!(scope.into_names().pointers.len(), 2);
    }

    #[test]
    fn one_namespace() {
        let mut scope = Scope::new();
        scope.bind_process("p").unwrap();
        scope.bind_pointer("a").unwrap();
        assert_eq!(
            scope.pointer("p"),
            Err(wrong_kind("p", NameKind::Process, NameKind::Pointer))
        );
        assert_eq!(
            scope.bind_process("a"),
            Err(wrong_kind("a", NameKind::Pointer, NameKind::Process))
        );
        assert_eq!(
            scope.bind_pointer("p"),
            Err(wrong_kind("p", NameKind::Process, NameKind::Pointer))
        );
        assert!(matches!(
            scope.process("zz"),
            Err(ErrorKind::Unbound { .. })
        ));
    }

    #[test]
    fn block_bindings_are_visible_after_end_in_fresh_slots() {
        let mut scope = Scope::new();
        scope.bind_process("p").unwrap();
        let old = scope.bind_pointer("a").unwrap();
        scope.open_block();
        let new = scope.bind_pointer("a").unwrap();
        assert_ne!(old, new, "a rebinding inside a block gets a fresh slot");
        assert_eq!(
            scope.pointer("a"),
            Ok(old),
            "the block still sees the old one"
        );
        scope.bind_process("q").unwrap();
        assert_eq!(
            scope.process("q"),
            Err(ErrorKind::BoundInBlock { name: "q".into() })
        );
        assert_eq!(
            scope.bind_pointer("a"),
            Err(ErrorKind::BoundTwiceInBlock { name: "a".into() })
        );
        scope.close_block();
        assert_eq!(scope.pointer("a"), Ok(new));
        assert_eq!(scope.process("q"), Ok(ProcId(1)));
    }
}
