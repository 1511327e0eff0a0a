//! The audit world's own way to cover many machines, as a deployment:
//! each host's auditd sends its records with the au-remote plugin
//! (audispd-plugins) to a central auditd (`local_events = no`,
//! `tcp_listen_port`), whose plugin is mapwatch with `[plugin] aggregator
//! = true`. Positives on the sending host raise alerts on the central one,
//! named by the sender's node name, with their leaders from the sender's
//! history; the central mapwatch adds no audit rules; stopping the central
//! auditd and starting it again loses no alert (au-remote holds what it
//! could not send). Needs root.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::auditd::{
    Auditd, AuditdSetup, add_execve_only_rules, shipped_plugin, write_root_only,
};
use support::logins::free_port;
use support::*;

/// The central auditd's setup: listening, its plugin mapwatch.
fn central_setup(plugin: &str, port: u16) -> AuditdSetup<'_> {
    AuditdSetup {
        plugin: Some(plugin),
        local_events: false,
        tcp_listen_port: Some(port),
        ..AuditdSetup::default()
    }
}

/// au-remote, as audispd-plugins ships it, reading a configuration of
/// the test's: it only reads /etc/audit/audisp-remote.conf, so it runs in
/// a mount namespace of its own where the test's file is bound there.
/// Each record is retried for up to a minute (the defaults, 3 tries in 5
/// s, can be spent before a busy machine has the central auditd
/// listening again, and the record is then dropped by au-remote).
fn au_remote_plugin(dir: &Path, port: u16) -> String {
    require_program("audisp-remote", "audispd-plugins");
    require_program("unshare", "util-linux");
    let config = dir.join("audisp-remote.conf");
    write_root_only(
        &config,
        &format!(
            "remote_server = 127.0.0.1\nport = {port}\ntransport = tcp\nmode = immediate\nqueue_depth = 10240\n\
             format = managed\nnetwork_retry_time = 1\nmax_tries_per_record = 100\nmax_time_per_record = 60\n\
             heartbeat_timeout = 0\nnetwork_failure_action = syslog\nremote_ending_action = reconnect\n\
             disk_low_action = ignore\ndisk_full_action = warn_once\ndisk_error_action = warn_once\n\
             generic_error_action = syslog\ngeneric_warning_action = syslog\nqueue_error_action = stop\n\
             overflow_action = syslog\nstartup_failure_action = warn_once_continue\n"
        ),
    );
    let wrapper = dir.join("au-remote.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c 'mount --bind \"$1\" /etc/audit/audisp-remote.conf && exec audisp-remote' au-remote {}\n",
            config.display()
        ),
    )
    .expect("au-remote wrapper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    format!(
        "active = yes\ndirection = out\npath = {}\ntype = always\nformat = string\n",
        wrapper.display()
    )
}

/// The shipped plugin config, made active, pointed at this build and at
/// a configuration with `[plugin] aggregator = true`.
fn mapwatch_plugin(dir: &Path, alerts: &Path) -> String {
    let config = dir.join("mapwatch.toml");
    write_root_only(
        &config,
        &format!(
            "[plugin]\naggregator = true\n[output]\njson_file = \"{}\"\n",
            alerts.display()
        ),
    );
    shipped_plugin(&config)
}

/// Waits for the central mapwatch's seed alert on `maps`.
fn wait_for_alert(alerts: &Path, maps: &str, central: &Auditd) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(alert) = json_documents(alerts)
            .into_iter()
            .find(|a| a["rule"]["id"] == SEED_ID && a["file"]["path"] == maps)
        {
            return alert;
        }
        assert!(
            Instant::now() < deadline,
            "no alert on {maps} from the central mapwatch; its alerts: {:#?}\ncentral auditd's stderr:\n{}\nthe central log has it: {}",
            json_documents(alerts)
                .iter()
                .map(|a| a["file"]["path"].clone())
                .collect::<Vec<_>>(),
            central.stderr(),
            central.log_text().contains(maps)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_from_the_sender(alert: &Value, shell_pid: u32) {
    assert_eq!(alert["host"]["name"], "sender-a", "{alert:#}");
    assert_eq!(alert["host"]["hostname"], "sender-a", "{alert:#}");
    let leader = &alert["process"]["entry_leader"];
    assert_eq!(leader["name"], "bash", "{alert:#}");
    assert_eq!(leader["pid"], shell_pid, "{alert:#}");
}

#[test]
fn an_aggregating_auditds_mapwatch_alerts_on_the_senders_positives_and_loses_none_across_a_restart()
{
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (central_dir, sender_dir): (PathBuf, PathBuf) =
        (dir.path().join("central"), dir.path().join("sender"));
    std::fs::create_dir_all(&sender_dir).expect("sender dir");
    std::fs::create_dir_all(&central_dir).expect("central dir");
    let port = free_port();
    let alerts = dir.path().join("alerts.json");
    let plugin = mapwatch_plugin(&central_dir, &alerts);
    let central = Auditd::start_with(&central_dir, &central_setup(&plugin, port));
    let au_remote = au_remote_plugin(&sender_dir, port);
    let sender = Auditd::start_with(
        &sender_dir,
        &AuditdSetup {
            node_name: Some("sender-a"),
            plugin: Some(&au_remote),
            ..AuditdSetup::default()
        },
    );
    let _rules = add_execve_only_rules();
    let rules_before = snapshot().rules;

    let target = Target::spawn();
    let shell = cat_maps_under_bash(&target, dir.path());
    let alert = wait_for_alert(&alerts, &target.maps(), &central);
    assert_from_the_sender(&alert, shell);
    assert_eq!(
        snapshot().rules,
        rules_before,
        "the aggregator's mapwatch added audit rules"
    );
    assert!(
        std::fs::read_to_string(&central.log)
            .expect("the central log")
            .lines()
            .any(|l| l.starts_with("node=sender-a type=EXECVE")),
        "the central auditd logs the sender's records"
    );

    // The central auditd goes away (and its plugin with it); the sender's
    // positives meanwhile wait in au-remote's queue.
    central.stop();
    let while_down = Target::spawn();
    let shell = cat_maps_under_bash(&while_down, dir.path());
    std::thread::sleep(Duration::from_secs(3));
    let restarted = Instant::now();
    let central = Auditd::start_with(&central_dir, &central_setup(&plugin, port));
    let alert = wait_for_alert(&alerts, &while_down.maps(), &central);
    assert_from_the_sender(&alert, shell);
    eprintln!(
        "the positive made while the central auditd was down alerted {:?} after its restart began",
        restarted.elapsed()
    );
    sender.stop();
}
