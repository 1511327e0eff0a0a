//! The audit record format: parsing records, reassembling EXECVE arguments,
//! and grouping records into exec events. Pure functions of their input: no
//! I/O, so every source (netlink, log replay, auditd plugin) shares them.

pub mod assemble;
pub mod config_change;
pub mod execve;
pub mod record;
pub mod serial;
pub mod syscall;
