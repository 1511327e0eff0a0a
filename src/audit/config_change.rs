//! CONFIG_CHANGE records that remove mapwatch's audit rules.
//!
//! Contract: [`removes_our_rule`] is true for a `CONFIG_CHANGE` record of a
//! rule removal (`op=remove_rule`) whose key list holds `mapwatch`, or that
//! removed an exclude-list rule (`list=5`: mapwatch's record-type
//! exclusions carry no key). Anyone with `CAP_AUDIT_CONTROL` can delete
//! rules (`auditctl -D`, auditd's `augenrules --load` after it started its
//! plugins); the owner of the session checks its rules when this says so.

use super::record::{Record, RecordType};

/// `AUDIT_FILTER_EXCLUDE`, as CONFIG_CHANGE writes the list.
const EXCLUDE_LIST: &[u8] = b"5";

/// True when `record` says a rule of ours may have been removed.
pub fn removes_our_rule(record: &Record<'_>, key: &str) -> bool {
    if record.rtype != RecordType::CONFIG_CHANGE {
        return false;
    }
    let mut removal = false;
    let mut ours = false;
    for (name, value) in record.fields() {
        match name {
            b"op" => removal = value.raw() == b"remove_rule",
            b"list" => ours |= value.raw() == EXCLUDE_LIST,
            b"key" => {
                ours |= value
                    .untrusted()
                    .is_some_and(|keys| keys.split(|b| *b == 1).any(|k| k == key.as_bytes()))
            }
            _ => {}
        }
    }
    removal && ours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str) -> Record<'_> {
        Record::parse_log_line(line.as_bytes()).expect("a valid record")
    }

    #[test]
    fn removal_of_a_keyed_rule_or_an_exclusion() {
        let keyed = record(
            r#"type=CONFIG_CHANGE msg=audit(1700000000.000:10): auid=0 ses=1 op=remove_rule key="mapwatch" list=4 res=1"#,
        );
        assert!(removes_our_rule(&keyed, "mapwatch"));
        let exclusion = record(
            "type=CONFIG_CHANGE msg=audit(1700000000.000:11): auid=0 ses=1 op=remove_rule key=(null) list=5 res=1",
        );
        assert!(removes_our_rule(&exclusion, "mapwatch"));
        // Several keys are joined with \x01 and hex-encoded.
        let several = record(
            "type=CONFIG_CHANGE msg=audit(1700000000.000:12): auid=0 ses=1 op=remove_rule key=65786563016D61707761746368 list=4 res=1",
        );
        assert!(removes_our_rule(&several, "mapwatch"));
        let near_miss = record(
            "type=CONFIG_CHANGE msg=audit(1700000000.000:13): auid=0 ses=1 op=remove_rule key=65786563016D617077617463686572 list=4 res=1",
        );
        assert!(!removes_our_rule(&near_miss, "mapwatch"));
    }

    #[test]
    fn other_changes_and_other_keys_are_not() {
        let added = record(
            r#"type=CONFIG_CHANGE msg=audit(1700000000.000:10): auid=0 ses=1 op=add_rule key="mapwatch" list=4 res=1"#,
        );
        assert!(!removes_our_rule(&added, "mapwatch"));
        let theirs = record(
            r#"type=CONFIG_CHANGE msg=audit(1700000000.000:11): auid=0 ses=1 op=remove_rule key="guest-auditd" list=4 res=1"#,
        );
        assert!(!removes_our_rule(&theirs, "mapwatch"));
        let syscall = record(
            r#"type=SYSCALL msg=audit(1700000000.000:12): arch=c000003e syscall=59 op=remove_rule key="mapwatch" list=5"#,
        );
        assert!(!removes_our_rule(&syscall, "mapwatch"));
    }
}
