//! Linux ABI values: errno, signal codes, protection and mapping flags, the
//! `PR_SET_TAGGED_ADDR_CTRL` layout.

use core::fmt;
use mte::{CheckMode, TagMask, TaggedPtr};

/// The errors a system call of the scenario language can return.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Errno {
    Perm,
    Srch,
    Io,
    NoMem,
    Acces,
    Fault,
    Inval,
}

impl Errno {
    pub const ALL: [Errno; 7] = [
        Errno::Perm,
        Errno::Srch,
        Errno::Io,
        Errno::NoMem,
        Errno::Acces,
        Errno::Fault,
        Errno::Inval,
    ];

    /// The name users write (`EINVAL`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::Srch => "ESRCH",
            Errno::Io => "EIO",
            Errno::NoMem => "ENOMEM",
            Errno::Acces => "EACCES",
            Errno::Fault => "EFAULT",
            Errno::Inval => "EINVAL",
        }
    }

    /// Linux's number (include/uapi/asm-generic/errno-base.h).
    pub const fn number(self) -> i32 {
        match self {
            Errno::Perm => 1,
            Errno::Srch => 3,
            Errno::Io => 5,
            Errno::NoMem => 12,
            Errno::Acces => 13,
            Errno::Fault => 14,
            Errno::Inval => 22,
        }
    }

    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `si_code` of a fault delivered to a process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FaultCode {
    /// Synchronous tag check fault (SIGSEGV).
    SegvMteSerr,
    /// Asynchronous tag check fault, reported at the next kernel entry (SIGSEGV).
    SegvMteAerr,
    /// No mapping at the address (SIGSEGV).
    SegvMapErr,
    /// The mapping forbids the access (SIGSEGV).
    SegvAccErr,
    /// Misaligned tag-setting address (SIGBUS).
    BusAdrAln,
}

impl FaultCode {
    pub const ALL: [FaultCode; 5] = [
        FaultCode::SegvMteSerr,
        FaultCode::SegvMteAerr,
        FaultCode::SegvMapErr,
        FaultCode::SegvAccErr,
        FaultCode::BusAdrAln,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FaultCode::SegvMteSerr => "SEGV_MTESERR",
            FaultCode::SegvMteAerr => "SEGV_MTEAERR",
            FaultCode::SegvMapErr => "SEGV_MAPERR",
            FaultCode::SegvAccErr => "SEGV_ACCERR",
            FaultCode::BusAdrAln => "BUS_ADRALN",
        }
    }

    /// Linux's `si_code` (include/uapi/asm-generic/siginfo.h).
    pub const fn si_code(self) -> i32 {
        match self {
            FaultCode::SegvMapErr => 1,
            FaultCode::SegvAccErr => 2,
            FaultCode::SegvMteAerr => 8,
            FaultCode::SegvMteSerr => 9,
            FaultCode::BusAdrAln => 1,
        }
    }

    pub fn from_name(name: &str) -> Option<FaultCode> {
        FaultCode::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault delivered to a process: its code and, where Linux reports one, the
/// faulting address (`si_addr`; none for asynchronous tag check faults).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fault {
    pub code: FaultCode,
    pub addr: Option<TaggedPtr>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "fault {} addr={:#x}", self.code, addr.raw()),
            None => write!(f, "fault {}", self.code),
        }
    }
}

/// `PROT_*` bits of mmap and mprotect.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `PROT_MTE`: the mapping is tagged (`VM_MTE`).
    pub mte: bool,
}

impl Prot {
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
        mte: false,
    };
    /// The scenario language's default, `prot=r,w`.
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
        exec: false,
        mte: false,
    };
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.read, "r"),
            (self.write, "w"),
            (self.exec, "x"),
            (self.mte, "mte"),
        ];
        let mut any = false;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if any {
                f.write_str(",")?;
            }
            f.write_str(name)?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Sharing {
    #[default]
    Private,
    Shared,
}

/// What backs a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Backing {
    /// Anonymous memory.
    #[default]
    Anon,
    /// A new tmpfs file (shmem): may be mapped tagged.
    Shm,
    /// A new regular file: page cache pages, never tagged.
    File,
}

/// The `map=` list of mmap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MapFlags {
    pub sharing: Sharing,
    pub backing: Backing,
    /// `MAP_POPULATE`.
    pub populate: bool,
    /// `MAP_FIXED` at this address.
    pub fixed: Option<TaggedPtr>,
}

/// `madvise(2)` advice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Advice {
    DontNeed,
    PageOut,
    HugePage,
    NoHugePage,
    Mergeable,
    Unmergeable,
}

/// The size of a load or store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AccessSize {
    B1,
    B2,
    B4,
    B8,
    B16,
}

impl AccessSize {
    pub const fn bytes(self) -> u64 {
        match self {
            AccessSize::B1 => 1,
            AccessSize::B2 => 2,
            AccessSize::B4 => 4,
            AccessSize::B8 => 8,
            AccessSize::B16 => 16,
        }
    }

    pub const fn from_bytes(bytes: u64) -> Option<AccessSize> {
        Some(match bytes {
            1 => AccessSize::B1,
            2 => AccessSize::B2,
            4 => AccessSize::B4,
            8 => AccessSize::B8,
            16 => AccessSize::B16,
            _ => return None,
        })
    }

    /// The largest value an access of this size holds.
    pub const fn max_value(self) -> u128 {
        match self {
            AccessSize::B16 => u128::MAX,
            _ => (1u128 << (8 * self.bytes())) - 1,
        }
    }
}

/// A process's tag-check settings as `PR_GET_TAGGED_ADDR_CTRL` reports them.
///
/// Layout (include/uapi/linux/prctl.h): bit 0 `PR_TAGGED_ADDR_ENABLE`, bit 1
/// `PR_MTE_TCF_SYNC`, bit 2 `PR_MTE_TCF_ASYNC` (both for asymm), bits 3-18
/// `PR_MTE_TAG_MASK` (the IRG include mask), bit 19 `PR_MTE_STORE_ONLY`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MteCtrl {
    pub tagged_addr: bool,
    pub tcf: CheckMode,
    pub include: TagMask,
    pub store_only: bool,
}

impl MteCtrl {
    pub const TAGGED_ADDR_ENABLE: u64 = 1 << 0;
    pub const TCF_SYNC: u64 = 1 << 1;
    pub const TCF_ASYNC: u64 = 1 << 2;
    pub const TAG_SHIFT: u32 = 3;
    pub const TAG_MASK: u64 = 0xffff << Self::TAG_SHIFT;
    pub const STORE_ONLY: u64 = 1 << 19;

    /// The `prctl` argument word.
    pub fn encode(self) -> u64 {
        let tcf = match self.tcf {
            CheckMode::None => 0,
            CheckMode::Sync => Self::TCF_SYNC,
            CheckMode::Async => Self::TCF_ASYNC,
            CheckMode::Asymm => Self::TCF_SYNC | Self::TCF_ASYNC,
        };
        u64::from(self.tagged_addr)
            | tcf
            | (u64::from(self.include.bits()) << Self::TAG_SHIFT)
            | if self.store_only { Self::STORE_ONLY } else { 0 }
    }

    /// Decodes an argument word; `None` if it has bits Linux rejects
    /// (`EINVAL`). `mte` says whether the machine has MTE: without it only
    /// `PR_TAGGED_ADDR_ENABLE` is valid (arch/arm64/kernel/process.c,
    /// `set_tagged_addr_ctrl()`).
    pub fn decode(word: u64, mte: bool) -> Option<MteCtrl> {
        let mut valid = Self::TAGGED_ADDR_ENABLE;
        if mte {
            valid |= Self::TCF_SYNC | Self::TCF_ASYNC | Self::TAG_MASK | Self::STORE_ONLY;
        }
        if word & !valid != 0 {
            return None;
        }
        let tcf = match (word & Self::TCF_SYNC != 0, word & Self::TCF_ASYNC != 0) {
            (false, false) => CheckMode::None,
            (true, false) => CheckMode::Sync,
            (false, true) => CheckMode::Async,
            (true, true) => CheckMode::Asymm,
        };
        Some(MteCtrl {
            tagged_addr: word & Self::TAGGED_ADDR_ENABLE != 0,
            tcf,
            include: TagMask::from_bits(((word & Self::TAG_MASK) >> Self::TAG_SHIFT) as u16),
            store_only: word & Self::STORE_ONLY != 0,
        })
    }
}

/// A `prctl` of the scenario language: keys left out keep their value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PrctlRequest {
    pub tagged_addr: Option<bool>,
    pub tcf: Option<CheckMode>,
    pub include: Option<TagMask>,
    pub store_only: Option<bool>,
}

impl PrctlRequest {
    /// The settings after the request, starting from `current`.
    pub fn apply(self, current: MteCtrl) -> MteCtrl {
        MteCtrl {
            tagged_addr: self.tagged_addr.unwrap_or(current.tagged_addr),
            tcf: self.tcf.unwrap_or(current.tcf),
            include: self.include.unwrap_or(current.include),
            store_only: self.store_only.unwrap_or(current.store_only),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prctl_layout_is_linuxs() {
        // The value the MTE selftests set: tagged addr, sync, include 0xfffe.
        let ctrl = MteCtrl {
            tagged_addr: true,
            tcf: CheckMode::Sync,
            include: TagMask::from_bits(0xfffe),
            store_only: false,
        };
        assert_eq!(ctrl.encode(), 0x1 | 0x2 | (0xfffe << 3));
        assert_eq!(MteCtrl::decode(ctrl.encode(), true), Some(ctrl));
        let asymm = MteCtrl {
            tcf: CheckMode::Asymm,
            store_only: true,
            ..MteCtrl::default()
        };
        assert_eq!(asymm.encode(), 0x6 | (1 << 19));
        assert_eq!(MteCtrl::decode(asymm.encode(), true), Some(asymm));
    }

    #[test]
    fn prctl_rejects_unknown_bits_and_mte_bits_without_mte() {
        assert_eq!(MteCtrl::decode(1 << 20, true), None);
        assert_eq!(MteCtrl::decode(MteCtrl::TCF_SYNC, false), None);
        assert!(MteCtrl::decode(MteCtrl::TAGGED_ADDR_ENABLE, false).is_some());
    }

    #[test]
    fn requests_keep_what_they_leave_out() {
        let current = MteCtrl {
            tagged_addr: true,
            tcf: CheckMode::Sync,
            include: TagMask::from_bits(0xfffe),
            store_only: false,
        };
        let next = PrctlRequest {
            tcf: Some(CheckMode::Async),
            ..PrctlRequest::default()
        }
        .apply(current);
        assert_eq!(
            next,
            MteCtrl {
                tcf: CheckMode::Async,
                ..current
            }
        );
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(Errno::from_name("EINVAL"), Some(Errno::Inval));
        assert_eq!(Errno::Inval.number(), 22);
        assert_eq!(
            FaultCode::from_name("SEGV_MTESERR").map(FaultCode::si_code),
            Some(9)
        );
        assert_eq!(AccessSize::B2.max_value(), 0xffff);
        assert_eq!(AccessSize::from_bytes(3), None);
        assert_eq!(Prot::READ_WRITE.to_string(), "r,w");
        assert_eq!(Prot::NONE.to_string(), "none");
    }
}
