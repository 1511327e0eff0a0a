//! Audit architectures and the syscall numbers mapwatch audits on each:
//! execve and execveat (what the rules see), setsid (sessions, so a
//! recorded log can be replayed with its session leaders) and ioctl with
//! [`PROCMAP_QUERY`] (a map read without read(2)).
//!
//! Contract: the netlink source installs rules for [`native_syscalls`] and
//! the assembler recognises a syscall by `(arch, number)` with [`is_exec`],
//! [`is_setsid`] and [`is_ioctl`].

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
}

impl AbiSyscalls {
    pub fn all(&self) -> [u32; 3] {
        [self.execve, self.execveat, self.setsid]
    }
}

const fn abi(arch: AuditArch, [execve, execveat, setsid, ioctl]: [u32; 4]) -> AbiSyscalls {
    AbiSyscalls {
        arch,
        execve,
        execveat,
        setsid,
        ioctl,
    }
}

/// Every ABI mapwatch knows.
const SYSCALLS: [AbiSyscalls; 4] = [
    abi(AuditArch::X86_64, [59, 322, 112, 16]),
    abi(AuditArch::I386, [11, 358, 66, 54]),
    abi(AuditArch::AARCH64, [221, 281, 157, 29]),
    abi(AuditArch::ARM, [11, 387, 66, 54]),
];

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
    }
}
