//! Audit architectures and the syscall numbers mapwatch audits on each:
//! execve and execveat (what the rules see), setsid (sessions, so a
//! recorded log can be replayed with its session leaders), ioctl with
//! [`PROCMAP_QUERY`] (a map read without read(2)), and the calls that
//! reach into another process's memory: `ptrace` (the requests of
//! [`PtraceRequest`]) and `process_vm_readv` / `process_vm_writev`.
//!
//! Contract: the netlink source installs rules for [`native_syscalls`] and
//! the assembler recognises a syscall by `(arch, number)` with [`is_exec`],
//! [`is_setsid`], [`is_ioctl`] and [`memory_call`].

/// `PROCMAP_QUERY` (Linux 6.11+): `_IOWR('f', 17, struct procmap_query)`,
/// the ioctl on an open `/proc/<pid>/maps` that answers, mapping by
/// mapping, what a read of it would give. Its struct is the same size on
/// every ABI.
pub const PROCMAP_QUERY: u32 = 0xc068_6611;

/// `AUDIT_ARCH_*` value of a SYSCALL record's `arch=` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditArch(pub u32);

impl AuditArch {
    pub const X86_64: Self = Self(0xc000_003e);
    pub const I386: Self = Self(0x4000_0003);
    pub const AARCH64: Self = Self(0xc000_00b7);
    pub const ARM: Self = Self(0x4000_0028);
}

/// The syscalls mapwatch audits on one ABI.
#[derive(Clone, Copy, Debug)]
pub struct AbiSyscalls {
    pub arch: AuditArch,
    pub execve: u32,
    pub execveat: u32,
    pub setsid: u32,
    pub ioctl: u32,
    pub ptrace: u32,
    pub process_vm_readv: u32,
    pub process_vm_writev: u32,
}

impl AbiSyscalls {
    pub fn all(&self) -> [u32; 3] {
        [self.execve, self.execveat, self.setsid]
    }
}

const fn abi(
    arch: AuditArch,
    [
        execve,
        execveat,
        setsid,
        ioctl,
        ptrace,
        process_vm_readv,
        process_vm_writev,
    ]: [u32; 7],
) -> AbiSyscalls {
    AbiSyscalls {
        arch,
        execve,
        execveat,
        setsid,
        ioctl,
        ptrace,
        process_vm_readv,
        process_vm_writev,
    }
}

/// Every ABI mapwatch knows.
const SYSCALLS: [AbiSyscalls; 4] = [
    abi(AuditArch::X86_64, [59, 322, 112, 16, 101, 310, 311]),
    abi(AuditArch::I386, [11, 358, 66, 54, 26, 347, 348]),
    abi(AuditArch::AARCH64, [221, 281, 157, 29, 117, 270, 271]),
    abi(AuditArch::ARM, [11, 387, 66, 54, 26, 376, 377]),
];

/// The `ptrace` requests mapwatch audits (`linux/ptrace.h`, the same on
/// every ABI): taking a process as a tracee, and changing its memory or
/// registers. Peeks are not audited: a dump by `PTRACE_PEEKDATA` is one
/// syscall per word, and auditing each would let a reader flood the audit
/// backlog (and blind the detector) at will; it needs an attach first,
/// which is audited.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PtraceRequest {
    PokeText,
    PokeData,
    PokeUser,
    SetRegs,
    SetFpRegs,
    Attach,
    SetRegSet,
    Seize,
}

impl PtraceRequest {
    /// The request by its number, if it is one mapwatch audits.
    pub fn from_number(number: u32) -> Option<Self> {
        Some(match number {
            4 => Self::PokeText,
            5 => Self::PokeData,
            6 => Self::PokeUser,
            13 => Self::SetRegs,
            15 => Self::SetFpRegs,
            16 => Self::Attach,
            0x4205 => Self::SetRegSet,
            0x4206 => Self::Seize,
            _ => return None,
        })
    }

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PokeText => "PTRACE_POKETEXT",
            Self::PokeData => "PTRACE_POKEDATA",
            Self::PokeUser => "PTRACE_POKEUSER",
            Self::SetRegs => "PTRACE_SETREGS",
            Self::SetFpRegs => "PTRACE_SETFPREGS",
            Self::Attach => "PTRACE_ATTACH",
            Self::SetRegSet => "PTRACE_SETREGSET",
            Self::Seize => "PTRACE_SEIZE",
        }
    }

    /// Whether it changes the tracee (memory or registers), rather than
    /// taking it as a tracee.
    pub fn changes_tracee(self) -> bool {
        !matches!(self, Self::Attach | Self::Seize)
    }
}

/// The ranges of `ptrace` requests the audit rules select, `a0` between
/// the two (the kernel compares `a0` before it writes anything): few
/// rules, and in each only requests of [`PtraceRequest`] or, between
/// them, `PTRACE_GETFPREGS` (14), which a debugger calls rarely.
pub const PTRACE_REQUEST_RANGES: [(u32, u32); 3] = [(4, 6), (13, 16), (0x4205, 0x4206)];

/// A call that reaches into another process's memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemoryCall {
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
}

impl MemoryCall {
    /// The syscall's name: `event.action` of its events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ptrace => "ptrace",
            Self::ProcessVmReadv => "process_vm_readv",
            Self::ProcessVmWritev => "process_vm_writev",
        }
    }
}

/// Which memory call `syscall` on `arch` is, if any.
pub fn memory_call(arch: AuditArch, syscall: u32) -> Option<MemoryCall> {
    let abi = abi_of(arch)?;
    match syscall {
        s if s == abi.ptrace => Some(MemoryCall::Ptrace),
        s if s == abi.process_vm_readv => Some(MemoryCall::ProcessVmReadv),
        s if s == abi.process_vm_writev => Some(MemoryCall::ProcessVmWritev),
        _ => None,
    }
}

fn abi_of(arch: AuditArch) -> Option<&'static AbiSyscalls> {
    SYSCALLS.iter().find(|s| s.arch == arch)
}

/// True when `syscall` on `arch` is execve or execveat.
pub fn is_exec(arch: AuditArch, syscall: u32) -> bool {
    abi_of(arch).is_some_and(|s| syscall == s.execve || syscall == s.execveat)
}

/// True when `syscall` on `arch` is setsid.
pub fn is_setsid(arch: AuditArch, syscall: u32) -> bool {
    abi_of(arch).is_some_and(|s| syscall == s.setsid)
}

/// True when `syscall` on `arch` is ioctl.
pub fn is_ioctl(arch: AuditArch, syscall: u32) -> bool {
    abi_of(arch).is_some_and(|s| syscall == s.ioctl)
}

/// The ABIs a process on this machine can use, native first: the 64-bit
/// ABI and its 32-bit compat ABI.
pub fn native_syscalls() -> &'static [AbiSyscalls] {
    if cfg!(target_arch = "x86_64") {
        &SYSCALLS[0..2]
    } else if cfg!(target_arch = "aarch64") {
        &SYSCALLS[2..4]
    } else {
        &[]
    }
}

/// Human name of an arch, as auditd's ENRICHED format writes it.
pub fn arch_name(arch: AuditArch) -> &'static str {
    match arch {
        AuditArch::X86_64 => "x86_64",
        AuditArch::I386 => "i386",
        AuditArch::AARCH64 => "aarch64",
        AuditArch::ARM => "armeb",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_exec_per_arch() {
        assert!(is_exec(AuditArch::X86_64, 59));
        assert!(is_exec(AuditArch::X86_64, 322));
        assert!(is_exec(AuditArch::I386, 11));
        assert!(!is_exec(AuditArch::X86_64, 11));
        assert!(!is_exec(AuditArch(0), 59));
        assert!(is_setsid(AuditArch::X86_64, 112));
        assert!(!is_exec(AuditArch::X86_64, 112));
        assert!(is_ioctl(AuditArch::X86_64, 16));
        assert!(is_ioctl(AuditArch::I386, 54));
        assert!(!is_ioctl(AuditArch::X86_64, 54));
        assert_eq!(
            memory_call(AuditArch::X86_64, 101),
            Some(MemoryCall::Ptrace)
        );
        assert_eq!(memory_call(AuditArch::I386, 26), Some(MemoryCall::Ptrace));
        assert_eq!(
            memory_call(AuditArch::X86_64, 311),
            Some(MemoryCall::ProcessVmWritev)
        );
        assert_eq!(memory_call(AuditArch::X86_64, 59), None);
    }

    #[test]
    fn every_audited_ptrace_request_is_in_a_range_of_the_rules() {
        for number in (0..0x4300).filter(|n| PtraceRequest::from_number(*n).is_some()) {
            assert!(
                PTRACE_REQUEST_RANGES
                    .iter()
                    .any(|(low, high)| (*low..=*high).contains(&number)),
                "{number:#x}"
            );
        }
    }
}
