//! The kernel audit rules mapwatch installs, and how they are recognised in
//! the kernel's list: by the key `mapwatch`, or, for the record-type
//! exclusions (which may carry no key), by their shape.

use netlink_packet_audit::{
    RuleAction, RuleField, RuleFieldFlags, RuleFlags, RuleMessage, RuleSyscalls,
};

use crate::audit::syscall::{AbiSyscalls, PROCMAP_QUERY, PTRACE_REQUEST_RANGES, native_syscalls};

/// The key on every rule mapwatch installs, and how stale ones are found.
pub const RULE_KEY: &str = "mapwatch";

const AUDIT_FILTER_TASK: u32 = 0x1;
const AUDIT_FILTER_EXIT: u32 = 0x4;
const AUDIT_FILTER_PREPEND: u32 = 0x10;

/// True for the rules mapwatch installs: keyed `mapwatch`, or one of its
/// unkeyed record-type exclusions.
pub fn is_ours(rule: &RuleMessage) -> bool {
    has_our_key(rule) || our_excluded_type(rule).is_some()
}

/// True for rules whose key list includes ours (auditctl joins several keys
/// with \x01).
pub fn has_our_key(rule: &RuleMessage) -> bool {
    rule.fields.iter().any(|(field, _)| {
        matches!(field, RuleField::Filterkey(key) if key.split('\x01').any(|k| k == RULE_KEY))
    })
}

fn exit_rule(action: RuleAction, prepend: bool) -> RuleMessage {
    let mut rule = RuleMessage::new();
    let flags = AUDIT_FILTER_EXIT | if prepend { AUDIT_FILTER_PREPEND } else { 0 };
    rule.flags = RuleFlags::from(flags);
    rule.action = action;
    rule
}

/// Record types of an exec event that mapwatch never reads: EOE (PROCTITLE,
/// always the last record of a syscall event, ends it) and BPRM_FCAPS
/// (file capabilities of the new program).
pub const UNUSED_RECORD_TYPES: [u32; 2] = [1320, 1321];

/// `AUDIT_FILTER_EXCLUDE`: the list that drops records by type.
const AUDIT_FILTER_EXCLUDE: u32 = 0x05;

/// `-a never,exclude -F msgtype=TYPE -F uid>=0`. The kernel ignores an
/// exclude rule that carries a key (and every exclude rule after it), so
/// this one is marked by its shape instead: `uid>=0` holds for every
/// record (uids compare unsigned), so it changes nothing the rule does, but
/// tells it from an administrator's `-a never,exclude -F msgtype=EOE`, and
/// lets any later run find and delete it, state file or not.
pub(super) fn exclude_rule(record_type: u32) -> RuleMessage {
    let mut rule = RuleMessage::new();
    rule.flags = RuleFlags::from(AUDIT_FILTER_EXCLUDE);
    rule.action = RuleAction::Never;
    rule.fields
        .push((RuleField::Msgtype(record_type), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Uid(0), RuleFieldFlags::GreaterThanOrEqual));
    rule
}

/// The record type `rule` drops, if it is one of our exclusions: exactly
/// the shape of [`exclude_rule`], for one of [`UNUSED_RECORD_TYPES`].
pub(super) fn our_excluded_type(rule: &RuleMessage) -> Option<u32> {
    let list = u32::from(rule.flags) & !AUDIT_FILTER_PREPEND;
    match rule.fields.as_slice() {
        [
            (RuleField::Msgtype(record_type), RuleFieldFlags::Equal),
            (RuleField::Uid(0), RuleFieldFlags::GreaterThanOrEqual),
        ] if rule.action == RuleAction::Never
            && list == AUDIT_FILTER_EXCLUDE
            && UNUSED_RECORD_TYPES.contains(record_type) =>
        {
            Some(*record_type)
        }
        _ => None,
    }
}

/// Every rule keyed `mapwatch` that a session adds, in order: the
/// self-exclusion first (prepended), then the task rule, and per ABI: the
/// exec rule, the PROCMAP_QUERY rule and the memory rules.
pub(super) fn keyed_rules(me: u32) -> Vec<RuleMessage> {
    let mut rules = vec![self_exclusion_rule(me), unaudited_threads_rule(me)];
    rules.extend(native_syscalls().iter().map(syscall_rule));
    rules.extend(native_syscalls().iter().map(map_query_rule));
    rules.extend(native_syscalls().iter().flat_map(memory_rules));
    rules
}

/// The pid whose syscalls `rule` keeps out of audit, if it is a
/// [`self_exclusion_rule`] as the kernel lists it (its syscall mask as the
/// kernel keeps it, so the rule is recognised, not compared).
pub(super) fn self_excluded_pid(rule: &RuleMessage) -> Option<u32> {
    let on_exit = u32::from(rule.flags) & !AUDIT_FILTER_PREPEND == AUDIT_FILTER_EXIT;
    if !on_exit || rule.action != RuleAction::Never || !has_our_key(rule) {
        return None;
    }
    rule.fields.iter().find_map(|(field, _)| match field {
        RuleField::Pid(pid) => Some(*pid),
        _ => None,
    })
}

/// `-a never,exit -F pid=OURS -k mapwatch`, first in the list: our own
/// activity must never feed back into our input.
fn self_exclusion_rule(pid: u32) -> RuleMessage {
    never_for_pid(AUDIT_FILTER_EXIT | AUDIT_FILTER_PREPEND, pid)
}

/// `-a never,task -F pid=OURS -k mapwatch`: threads we create afterwards
/// get no audit context at all, so our own syscalls (a read confirmation
/// costs three per event) skip the audit entry and exit paths.
fn unaudited_threads_rule(pid: u32) -> RuleMessage {
    never_for_pid(AUDIT_FILTER_TASK, pid)
}

/// `-a never,LIST -F pid=PID -k mapwatch`, every syscall.
fn never_for_pid(list: u32, pid: u32) -> RuleMessage {
    let mut rule = RuleMessage::new();
    rule.flags = RuleFlags::from(list);
    rule.action = RuleAction::Never;
    rule.syscalls = RuleSyscalls::new_maxed();
    rule.fields
        .push((RuleField::Pid(pid), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Filterkey(RULE_KEY.into()), RuleFieldFlags::Equal));
    rule
}

/// `-a always,exit -F arch=ARCH -S SYSCALLS [-F FILTER...] -k mapwatch`:
/// every syscall rule mapwatch adds has this shape.
fn audited(
    abi: &AbiSyscalls,
    syscalls: &[u32],
    filters: &[(RuleField, RuleFieldFlags)],
) -> RuleMessage {
    let mut rule = exit_rule(RuleAction::Always, false);
    for &syscall in syscalls {
        rule.syscalls.set(syscall);
    }
    rule.fields
        .push((RuleField::Arch(abi.arch.0), RuleFieldFlags::Equal));
    rule.fields.extend(filters.iter().cloned());
    rule.fields
        .push((RuleField::Filterkey(RULE_KEY.into()), RuleFieldFlags::Equal));
    rule
}

/// `-S execve,execveat,setsid`. setsid is rare and tells a replayed log
/// where sessions begin.
fn syscall_rule(abi: &AbiSyscalls) -> RuleMessage {
    audited(abi, &abi.all(), &[])
}

/// `-S ioctl -F a1=PROCMAP_QUERY`: the kernel compares the request before
/// it writes anything, so the other ioctls (terminals, sockets, devices)
/// cost one comparison each.
fn map_query_rule(abi: &AbiSyscalls) -> RuleMessage {
    let request = (RuleField::Arg1(PROCMAP_QUERY), RuleFieldFlags::Equal);
    audited(abi, &[abi.ioctl], &[request])
}

/// The calls that reach into another process's memory: `-S ptrace -F
/// a0>=LOW -F a0<=HIGH` for each range of [`PTRACE_REQUEST_RANGES`], and
/// `-S process_vm_readv,process_vm_writev`. Every other ptrace request (a
/// debugger's peeks and waits) costs the kernel two comparisons.
fn memory_rules(abi: &AbiSyscalls) -> Vec<RuleMessage> {
    let ptrace = PTRACE_REQUEST_RANGES.iter().map(|&(low, high)| {
        let requests = [
            (RuleField::Arg0(low), RuleFieldFlags::GreaterThanOrEqual),
            (RuleField::Arg0(high), RuleFieldFlags::LessThanOrEqual),
        ];
        audited(abi, &[abi.ptrace], &requests)
    });
    let vm = audited(abi, &[abi.process_vm_readv, abi.process_vm_writev], &[]);
    ptrace.chain([vm]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_key_detection() {
        assert!(has_our_key(&syscall_rule(&native_syscalls()[0])));
        assert!(has_our_key(&self_exclusion_rule(1)));
        assert!(has_our_key(&map_query_rule(&native_syscalls()[0])));
        let mut other = exit_rule(RuleAction::Always, false);
        other.fields.push((
            RuleField::Filterkey("exec\x01mapwatch".into()),
            RuleFieldFlags::Equal,
        ));
        assert!(has_our_key(&other));
        other.fields[0] = (
            RuleField::Filterkey("mapwatcher".into()),
            RuleFieldFlags::Equal,
        );
        assert!(!has_our_key(&other));
    }

    #[test]
    fn our_exclusions_are_known_by_their_shape() {
        for record_type in UNUSED_RECORD_TYPES {
            let ours = exclude_rule(record_type);
            assert_eq!(our_excluded_type(&ours), Some(record_type));
            assert!(is_ours(&ours));
        }
        // An administrator's `-a never,exclude -F msgtype=EOE` is theirs.
        let mut plain = exclude_rule(1320);
        plain.fields.truncate(1);
        assert!(!is_ours(&plain));
        // The same shape for a type mapwatch never excludes is not ours.
        assert!(!is_ours(&exclude_rule(1300)));
        // Nor the same fields on another list.
        let mut on_exit = exclude_rule(1320);
        on_exit.flags = RuleFlags::from(AUDIT_FILTER_EXIT);
        assert!(!is_ours(&on_exit));
    }
}
