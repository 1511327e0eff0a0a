//! Audit architectures and the exec syscall numbers on each.
//!
//! Contract: the netlink source installs rules for [`native_exec_syscalls`] and
//! the assembler recognises an exec by `(arch, syscall)` with [`is_exec`].

/// `AUDIT_ARCH_*` value of a SYSCALL record's `arch=` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditArch(pub u32);

impl AuditArch {
    pub const X86_64: Self = Self(0xc000_003e);
    pub const I386: Self = Self(0x4000_0003);
    pub const AARCH64: Self = Self(0xc000_00b7);
    pub const ARM: Self = Self(0x4000_0028);
}

/// `(arch, execve, execveat)` for every ABI mapwatch knows.
const EXEC_SYSCALLS: [(AuditArch, u32, u32); 4] = [
    (AuditArch::X86_64, 59, 322),
    (AuditArch::I386, 11, 358),
    (AuditArch::AARCH64, 221, 281),
    (AuditArch::ARM, 11, 387),
];

/// True when `syscall` on `arch` is execve or execveat.
pub fn is_exec(arch: AuditArch, syscall: u32) -> bool {
    EXEC_SYSCALLS
        .iter()
        .any(|(a, execve, execveat)| *a == arch && (syscall == *execve || syscall == *execveat))
}

/// The ABIs a process on this machine can use, native first, with their exec
/// syscalls: the 64-bit ABI and its 32-bit compat ABI.
pub fn native_exec_syscalls() -> &'static [(AuditArch, u32, u32)] {
    if cfg!(target_arch = "x86_64") {
        &EXEC_SYSCALLS[0..2]
    } else if cfg!(target_arch = "aarch64") {
        &EXEC_SYSCALLS[2..4]
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
    }
}
