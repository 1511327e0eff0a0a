//! Elastic's rules, unchanged, on live exec events: for each rule of the
//! list below, a harmless emulation of the behaviour its query describes
//! (the trigger) and a near miss that differs only in the suspicious
//! condition, each run as its own session. Each rule must fire exactly once
//! in its trigger's session and never in its near miss's. Programs whose
//! real run would change the machine (sudo, usermod, journalctl, kexec…)
//! are stand-ins: copies of `true` (or of `bash`, where the rule is about
//! what the program starts) under the program's name, which is what the
//! rules test. The current upstream version of the seed rule runs the
//! spine's scenario in every seed shell.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

mod support;
use support::*;

/// Stand-ins copied from `true`.
const TRUE_STANDINS: &[&str] = &[
    "benign",
    "nping",
    "proxychains",
    "hping3",
    "trap",
    "sudo",
    "setenforce",
    "unshadow",
    "kworkerx",
    "tunnel",
    "curl",
    "dmesg",
    "pg_dump",
    "chmod",
    "openssl",
    "trufflehog",
    "touch",
    "kubectl",
    "getcap",
    "xdg-open",
    "usermod",
    "gdb",
    "rlwrap",
    "debugfs",
    "setcap",
    "nohup",
    "unmkinitramfs",
    "journalctl",
    "find",
    "ssh",
    "kubeletctl",
    "dmidecode",
    "perl",
    "shred",
    "php8.2",
    "kexec",
    "mkdir",
    "stty",
    "runc",
    "hexrun",
    "trailing ",
];

/// Stand-ins copied from `bash`: rules about what they start.
const SHELL_STANDINS: &[&str] = &["proot", "node", "zoom", "zoomx"];

struct Case {
    rule: &'static str,
    trigger: &'static str,
    near_miss: &'static str,
}

/// `$B` is the stand-ins' directory, `$D` the test's; `$NOBODY` runs a
/// command as uid and gid 65534; `$TAG` names the run, for commands that
/// start a session of their own (`script`), whose alerts are found by it.
const CASES: &[Case] = &[
    Case {
        rule: "discovery_linux_nping_activity.toml",
        trigger: "$B/nping --tcp 127.0.0.1",
        near_miss: "$B/benign --tcp 127.0.0.1",
    },
    Case {
        rule: "command_and_control_linux_proxychains_activity.toml",
        trigger: "$B/proxychains true",
        near_miss: "$B/benign true",
    },
    Case {
        rule: "defense_evasion_potential_proot_exploits.toml",
        trigger: "$B/proot -c '/bin/true; :'",
        near_miss: "$B/node -c '/bin/true; :'",
    },
    Case {
        rule: "discovery_linux_hping_activity.toml",
        trigger: "$B/hping3 -S 127.0.0.1",
        near_miss: "$B/benign -S 127.0.0.1",
    },
    Case {
        rule: "privilege_escalation_trap_execution.toml",
        trigger: "$B/trap SIGINT",
        near_miss: "$B/trap INT",
    },
    Case {
        rule: "privilege_escalation_sudo_cve_2019_14287.toml",
        trigger: "$B/sudo -u#-1 id",
        near_miss: "$B/sudo -u#0 id",
    },
    Case {
        rule: "defense_evasion_disable_selinux_attempt.toml",
        trigger: "$B/setenforce 0",
        near_miss: "$B/setenforce 1",
    },
    Case {
        rule: "credential_access_credential_dumping.toml",
        trigger: "$B/unshadow passwd shadow",
        near_miss: "$B/unshadow passwd",
    },
    Case {
        rule: "defense_evasion_kthreadd_masquerading.toml",
        trigger: "$B/kworkerx",
        near_miss: "$B/benign",
    },
    Case {
        rule: "command_and_control_tunneling_via_earthworm.toml",
        trigger: "$B/tunnel -s rssocks -d 127.0.0.1",
        near_miss: "$B/tunnel -s ssocksd -d 127.0.0.1",
    },
    Case {
        rule: "command_and_control_telegram_api_request.toml",
        trigger: "$B/curl https://api.telegram.org/bot1/getMe",
        near_miss: "$B/curl https://example.org/bot1/getMe",
    },
    Case {
        rule: "defense_evasion_clear_kernel_ring_buffer.toml",
        trigger: "$B/dmesg -C",
        near_miss: "$B/dmesg -T",
    },
    Case {
        rule: "exfiltration_potential_database_dumping.toml",
        trigger: "$B/pg_dump -d app",
        near_miss: "$B/benign -d app",
    },
    Case {
        rule: "privilege_escalation_chown_chmod_unauthorized_file_read.toml",
        trigger: "$B/chmod -R --reference=/etc/shadow $D",
        near_miss: "$B/chmod -R 0755 $D",
    },
    Case {
        rule: "discovery_passwordless_sudo_probing.toml",
        trigger: "$B/sudo -n true",
        near_miss: "$B/sudo -n id",
    },
    Case {
        rule: "defense_evasion_data_encrypted_via_openssl.toml",
        trigger: "$B/openssl enc -aes256 -in secret -out secret.enc",
        near_miss: "$B/openssl enc -aes256 -in secret",
    },
    Case {
        rule: "discovery_suspicious_memory_grep_activity.toml",
        trigger: "grep -c '[stack]' /dev/null",
        near_miss: "grep -c stack /dev/null",
    },
    Case {
        rule: "credential_access_trufflehog_execution.toml",
        trigger: "$B/trufflehog --json filesystem /srv",
        near_miss: "$B/trufflehog filesystem /srv",
    },
    Case {
        rule: "credential_access_manual_memory_dumping.toml",
        trigger: "(exec -a /proc/1/mem cat < /dev/null)",
        near_miss: "(exec -a /proc/1/memory cat < /dev/null)",
    },
    Case {
        rule: "defense_evasion_esxi_suspicious_timestomp_touch.toml",
        trigger: "$B/touch -r /etc/vmware/config $D/x",
        near_miss: "$B/touch -r /etc/hostname $D/x",
    },
    Case {
        rule: "discovery_kubectl_permission_discovery.toml",
        trigger: "$B/kubectl auth can-i --list",
        near_miss: "$B/kubectl auth whoami",
    },
    Case {
        rule: "discovery_process_capabilities.toml",
        trigger: "$NOBODY $B/getcap -r /",
        near_miss: "$B/getcap -r /",
    },
    Case {
        rule: "execution_suspicious_xdg_open_command_execution.toml",
        trigger: "$B/xdg-open https://example.org",
        near_miss: "$B/benign https://example.org",
    },
    Case {
        rule: "persistence_linux_backdoor_user_creation.toml",
        trigger: "$B/usermod -u 0 -o backup",
        near_miss: "$B/usermod -u 1001 -o backup",
    },
    Case {
        rule: "persistence_openssl_passwd_hash_generation.toml",
        trigger: "$B/openssl passwd -6 secret",
        near_miss: "$B/openssl passwd -6 -help",
    },
    Case {
        rule: "credential_access_gdb_process_hooking.toml",
        trigger: "$B/gdb -p 4242",
        near_miss: "$B/gdb -p 1",
    },
    Case {
        rule: "credential_access_gdb_init_process_hooking.toml",
        trigger: "$B/gdb --pid 1",
        near_miss: "$B/gdb --pid 4242",
    },
    Case {
        rule: "execution_nc_listener_via_rlwrap.toml",
        trigger: "$B/rlwrap nc -lvp 4444",
        near_miss: "$B/rlwrap nc",
    },
    Case {
        rule: "privilege_escalation_sda_disk_mount_non_root.toml",
        trigger: "$NOBODY $B/debugfs /dev/sda1",
        near_miss: "$B/debugfs /dev/sda1",
    },
    Case {
        rule: "persistence_setuid_setgid_capability_set.toml",
        trigger: "$B/setcap cap_setuid+ep $D/x",
        near_miss: "$B/setcap cap_net_raw+ep $D/x",
    },
    Case {
        rule: "execution_shell_via_background_process.toml",
        trigger: "$B/nohup 'bash -i >& /dev/tcp/127.0.0.1/4444 0>&1'",
        near_miss: "$B/nohup 'bash -i >& /dev/null 0>&1'",
    },
    Case {
        rule: "persistence_unpack_initramfs_via_unmkinitramfs.toml",
        trigger: "$B/unmkinitramfs /boot/initrd.img $D/x",
        near_miss: "$B/benign /boot/initrd.img $D/x",
    },
    Case {
        rule: "defense_evasion_journalctl_clear_logs.toml",
        trigger: "$B/journalctl --vacuum-time=1s",
        near_miss: "$B/journalctl --since=-1s",
    },
    Case {
        rule: "discovery_esxi_software_via_find.toml",
        trigger: "$B/find /vmfs/volumes -name '*.vmx'",
        near_miss: "$B/find /srv/vmfs -name '*.vmx'",
    },
    Case {
        rule: "discovery_kubectl_secrets_all_namespaces.toml",
        trigger: "$B/kubectl get secrets -A",
        near_miss: "$B/kubectl get secrets -n app",
    },
    Case {
        rule: "discovery_sudo_allowed_command_enumeration.toml",
        trigger: "$B/sudo -l",
        near_miss: "$B/sudo -l -U root",
    },
    Case {
        rule: "discovery_private_key_password_searching_activity.toml",
        trigger: "$B/find /root/ -name id_rsa",
        near_miss: "$B/find /root/ -name known_hosts",
    },
    Case {
        rule: "command_and_control_linux_ssh_x11_forwarding.toml",
        trigger: "$B/ssh -X host",
        near_miss: "$B/ssh -x host",
    },
    Case {
        rule: "discovery_potential_kubeletctl_execution.toml",
        trigger: "$B/kubeletctl pods",
        near_miss: "$B/kubectl pods",
    },
    Case {
        rule: "defense_evasion_processes_with_trailing_spaces.toml",
        trigger: "\"$B/trailing \"",
        near_miss: "$B/benign",
    },
    Case {
        rule: "defense_evasion_shell_history_clearing_via_environment_variables.toml",
        trigger: "HISTFILE=/dev/null sleep 3",
        near_miss: "HISTFILE=$D/history sleep 3",
    },
    Case {
        rule: "command_and_control_potential_tunneling_command_line.toml",
        // The address is put together by the shell, whose own command line
        // must not match.
        trigger: "a=10.0.0.1; $B/tunnel $a:8080:10.0.0.2:22",
        near_miss: "a=10.0.0.1; $B/tunnel $a:8080 10.0.0.2:22",
    },
    Case {
        rule: "defense_evasion_hex_payload_execution_via_commandline.toml",
        trigger: r"$B/hexrun '\x41\x42\x43\x44\x45\x46\x47\x48\x49\x4a\x4b\x4c\x4d\x4e'",
        near_miss: r"$B/hexrun '\x41\x42\x43\x44\x45\x46\x47\x48\x49\x4a\x4b\x4c\x4d'",
    },
    Case {
        rule: "credential_access_gh_auth_via_nodejs.toml",
        trigger: "$B/node -c 'sh -c \"gh auth token\" 2>/dev/null; true'",
        near_miss: "$B/node -c 'sh -c \"gh auth status\" 2>/dev/null; true'",
    },
    Case {
        rule: "discovery_dmidecode_system_discovery.toml",
        trigger: "$B/dmidecode -s system-uuid",
        near_miss: "bash $D/dmidecode.sh",
    },
    Case {
        rule: "execution_python_tty_shell.toml",
        trigger: "/usr/bin/python3 -c 'import os; os.system(\"true\")  # pty.spawn'",
        near_miss: "/usr/bin/python3 -c 'import os; os.system(\"true\")  # pty'",
    },
    Case {
        rule: "execution_perl_tty_shell.toml",
        trigger: "$B/perl -e exec '\"sh\";'",
        near_miss: "$B/perl -e exec '\"ls\";'",
    },
    Case {
        rule: "defense_evasion_file_deletion_via_shred.toml",
        trigger: "$B/shred -vu $D/x",
        near_miss: "$B/shred -v $D/x",
    },
    Case {
        rule: "persistence_simple_web_server_creation.toml",
        trigger: "$B/php8.2 -S 127.0.0.1:8080",
        near_miss: "$B/php8.2 -r 'echo 1;'",
    },
    Case {
        rule: "privilege_escalation_load_and_unload_of_kernel_via_kexec.toml",
        trigger: "$B/kexec -l /boot/vmlinuz",
        near_miss: "$B/kexec --version",
    },
    Case {
        rule: "defense_evasion_directory_creation_in_bin.toml",
        trigger: "$B/mkdir /usr/bin/.cache",
        near_miss: "$B/mkdir $D/.cache",
    },
    Case {
        rule: "execution_interpreter_tty_upgrade.toml",
        trigger: "$B/stty raw -echo",
        near_miss: "$B/stty raw echo",
    },
    Case {
        rule: "execution_suspicious_process_execution_by_zoom.toml",
        trigger: "$B/zoom -c 'exec /bin/true'",
        near_miss: "$B/zoomx -c 'exec /bin/true'",
    },
    Case {
        rule: "privilege_escalation_potential_suid_sgid_proxy_execution.toml",
        trigger: "$NOBODY bash < $D/suid.sh",
        near_miss: "$NOBODY bash < $D/nosuid.sh",
    },
    Case {
        rule: "privilege_escalation_container_util_misconfiguration.toml",
        trigger: "script -qfec \"sh -c '$NOBODY $B/runc run $TAG; true'\" /dev/null < /dev/null > /dev/null",
        // The same, but runc loses the terminal (setsid): not interactive.
        near_miss: "script -qfec \"sh -c 'setsid $NOBODY $B/runc run $TAG; true'\" /dev/null < /dev/null > /dev/null",
    },
];

/// The current upstream version of the seed rule.
const SEED_RULE: &str = "discovery_proc_maps_read.toml";

fn rule_id(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("reading the rule");
    let doc: toml::Table = toml::from_str(&text).expect("the rule is TOML");
    doc["rule"]["rule_id"]
        .as_str()
        .expect("rule_id is a string")
        .to_owned()
}

/// A directory others can enter (the stand-ins run as nobody too).
fn open_dir(path: &Path) {
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn copy_program(from: &str, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {from}: {e}"));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The scripts some cases read, and the stand-ins.
fn set_up(dir: &Path, bin: &Path) {
    open_dir(dir);
    open_dir(bin);
    for name in TRUE_STANDINS {
        copy_program("/bin/true", &bin.join(name), 0o755);
    }
    for name in SHELL_STANDINS {
        copy_program("/bin/bash", &bin.join(name), 0o755);
    }
    // Set-user-ID root, run by nobody, as `/usr/bin/su` (its argv[0]),
    // from a shell whose argv is only `bash`.
    copy_program("/bin/true", &dir.join("suidtrue"), 0o4755);
    copy_program("/bin/true", &dir.join("plaintrue"), 0o755);
    for (script, program) in [("suid.sh", "suidtrue"), ("nosuid.sh", "plaintrue")] {
        std::fs::write(
            dir.join(script),
            format!("(exec -a /usr/bin/su {})\n", dir.join(program).display()),
        )
        .expect("script");
    }
    std::fs::write(
        dir.join("dmidecode.sh"),
        format!("{}/dmidecode -s system-uuid\n", bin.display()),
    )
    .expect("script");
}

fn tag(case: usize, trigger: bool) -> String {
    format!("case{case}-{trigger}")
}

fn expand(body: &str, dir: &Path, bin: &Path, tag: &str) -> String {
    body.replace(
        "$NOBODY",
        "setpriv --reuid=65534 --regid=65534 --clear-groups --",
    )
    .replace("$TAG", tag)
    .replace("$B", &bin.display().to_string())
    .replace("$D", &dir.display().to_string())
}

#[test]
fn elastics_rules_fire_once_on_their_triggers_and_never_on_near_misses() {
    require_root();
    require_program("python3", "python3");
    require_program("setpriv", "util-linux");
    require_program("script", "bsdutils");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let top = tempfile::tempdir().expect("tempdir");
    open_dir(top.path());
    let dir = top.path().join("work");
    let bin = top.path().join("bin");
    set_up(&dir, &bin);
    let rules_d = top.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    let mut ids = BTreeMap::new();
    for name in CASES.iter().map(|c| c.rule).chain([SEED_RULE]) {
        let path = elastic_rule_path(name);
        std::fs::copy(&path, rules_d.join(name)).expect("copying the rule");
        ids.insert(name, rule_id(&path));
    }
    assert!(CASES.len() >= 40, "{} cases", CASES.len());

    let mapwatch = Mapwatch::start_with(
        top.path(),
        &format!("[rules]\ndirectories = [\"{}\"]\n", rules_d.display()),
    );
    // Each session's shell pid (its session leader) -> (case, trigger?).
    let mut sessions = BTreeMap::new();
    for (i, case) in CASES.iter().enumerate() {
        for (trigger, body) in [(true, case.trigger), (false, case.near_miss)] {
            let tag = tag(i, trigger);
            let pid = run_detached(&["bash", "-c"], &tag, &expand(body, &dir, &bin, &tag), &dir);
            sessions.insert(pid, (i, trigger));
        }
    }
    let seed_target = Target::spawn();
    let seed_near = run_entry_leader(
        "bash",
        &format!("cat /proc/{}/smaps > /dev/null", seed_target.pid()),
        &dir,
    );
    let runs = run_spine_scenarios(&dir);
    mapwatch.sync();
    let alerts = mapwatch.alerts();

    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let id = &ids[case.rule];
        for trigger in [true, false] {
            let fired = alerts
                .iter()
                .filter(|a| a["rule"]["id"] == id.as_str())
                .filter(|a| {
                    a["process"]["session_leader"]["pid"]
                        .as_u64()
                        .and_then(|pid| sessions.get(&(pid as u32)))
                        == Some(&(i, trigger))
                        || args_of(a).contains(&tag(i, trigger))
                })
                .count();
            let expected = usize::from(trigger);
            if fired != expected {
                let body = if trigger {
                    case.trigger
                } else {
                    case.near_miss
                };
                failures.push(format!(
                    "{}: {fired} alerts on its {} `{body}`, expected {expected}",
                    case.rule,
                    if trigger { "trigger" } else { "near miss" },
                ));
            }
        }
    }
    let seed_id = &ids[SEED_RULE];
    let seed_alerts: Vec<Value> = alerts
        .iter()
        .filter(|a| a["rule"]["id"] == seed_id.as_str())
        .cloned()
        .collect();
    assert_eq!(
        seed_id, SEED_ID,
        "the current version replaces the shipped one"
    );
    assert!(
        !seed_alerts
            .iter()
            .any(|a| a["process"]["session_leader"]["pid"] == seed_near),
        "the seed rule fired on a read of smaps"
    );
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}\nalerts:\n{}",
        failures.len(),
        CASES.len() * 2,
        failures.join("\n"),
        alerts
            .iter()
            .map(|a| format!(
                "{} {} {:?} session {}",
                a["rule"]["name"],
                a["process"]["name"],
                args_of(a),
                a["process"]["session_leader"]["pid"]
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_spine_alerts(&runs, &seed_alerts);
}
