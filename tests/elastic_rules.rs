//! Elastic's own rules, verbatim from `../shared/testdata/elastic-rules/`,
//! decide as Elasticsearch decides where a negation meets an array or a
//! missing field (tests/eql_semantics.rs pins each operator): on ECS
//! documents, and on live exec events with the rules loaded by the service.

use std::path::PathBuf;

use mapwatch::rule::Rule;
use mapwatch::rule::file::{check_rule, parse_rule};
use mapwatch::rule::json::JsonEvent;
use serde_json::{Value, json};

mod support;
use support::*;

/// `credential_access_gdb_process_hooking.toml`: gdb attaching to a pid,
/// with `process.args != "1"` (pid 1 is another rule's).
const GDB_RULE: &str = "credential_access_gdb_process_hooking.toml";
const GDB_ID: &str = "66c058f3-99f4-4d18-952b-43348f2577a0";
/// `persistence_potential_persistence_script_executable_bit_set.toml`: a
/// persistence script made executable, `and not (process.parent.executable
/// : "/var/lib/dpkg/*" or …)`.
const CHMOD_RULE: &str = "persistence_potential_persistence_script_executable_bit_set.toml";
const CHMOD_ID: &str = "94418745-529f-4259-8d25-a713a6feb6ae";

fn elastic_rule(name: &str) -> Rule {
    let path = elastic_rule_path(name);
    let text = std::fs::read_to_string(&path).expect("reading the rule");
    parse_rule(&text, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An exec event as Elastic Defend would index it.
fn exec(name: &str, args: &[&str], parent_executable: Option<&str>) -> Value {
    let mut doc = json!({
        "event": {"category": ["process"], "type": ["start"], "action": "exec"},
        "host": {"os": {"type": "linux"}},
        "process": {"name": name, "args": args, "command_line": args.join(" "), "parent": {"pid": 4000}},
    });
    if let Some(exe) = parent_executable {
        doc["process"]["parent"]["executable"] = json!(exe);
    }
    doc
}

/// Files of the corpus that do not load, each with why (README.md lists
/// them for users). None today.
const NOT_LOADING: [(&str, &str); 0] = [];

/// Every rule of Elastic's corpus loads unchanged, with every error of a
/// file that does not reported; the warnings are only about fields
/// mapwatch never fills.
#[test]
fn elastics_linux_exec_rules_load_unchanged() {
    let dir = elastic_rule_path("README.md").with_file_name("");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 189, "Elastic's corpus has 189 rules");
    let mut refused = Vec::new();
    let mut warnings = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).expect("reading the rule");
        match check_rule(&text, name) {
            Ok(rule) => warnings.extend(rule.warnings.iter().map(|w| w.to_string())),
            Err(errors) if NOT_LOADING.iter().any(|(n, _)| *n == name) => {
                assert!(!errors.is_empty());
            }
            Err(errors) => refused.extend(errors.iter().map(|e| e.to_string())),
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    assert!(
        warnings.iter().all(|w| w.contains("never fills")),
        "unexpected warnings:\n{}",
        warnings.join("\n")
    );
}

#[test]
fn elastics_negations_decide_as_elasticsearch_on_ecs_documents() {
    let gdb = elastic_rule(GDB_RULE);
    let matches = |rule: &Rule, doc: &Value| rule.matches(&mut JsonEvent::new(doc));
    assert!(
        !matches(
            &gdb,
            &exec(
                "gdb",
                &["gdb", "-nx", "-batch", "-p", "1", "--version"],
                None
            )
        ),
        "one argument is \"1\": must_not term holds for no document that has it"
    );
    assert!(matches(
        &gdb,
        &exec("gdb", &["gdb", "-nx", "-batch", "-p", "4242"], None)
    ));

    let chmod = elastic_rule(CHMOD_RULE);
    let args = ["chmod", "+x", "/etc/cron.daily/job"];
    assert!(
        matches(&chmod, &exec("chmod", &args, None)),
        "a missing parent executable satisfies `not (process.parent.executable : …)`"
    );
    assert!(matches(
        &chmod,
        &exec("chmod", &args, Some("/usr/bin/bash"))
    ));
    assert!(
        !matches(
            &chmod,
            &exec("chmod", &args, Some("/var/lib/dpkg/info/x.postinst"))
        ),
        "the rule's own exclusion still excludes"
    );
}

/// A parent whose executable can no longer be read: its main thread exits
/// at once (`pthread_exit`, so `/proc/PID/exe` is gone) and a second
/// thread, once the first is a zombie (it then writes `argv[1].ready`) and
/// the file `argv[1]` exists, runs the command that follows. Ready before
/// mapwatch starts, whose process table then has no exec event of it, it
/// is to the agent as gone as one that has exited: the alert has no
/// `process.parent.executable`.
const ORPHANING_PARENT: &str = r#"
import ctypes, os, subprocess, sys, threading, time
main = threading.get_native_id()
def run():
    stat = f"/proc/self/task/{main}/stat"
    while os.path.exists(stat) and open(stat).read().rsplit(")", 1)[1].split()[0] not in "ZX":
        time.sleep(0.01)
    open(sys.argv[1] + ".ready", "w").close()
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    subprocess.run(sys.argv[2:])
    os._exit(0)
threading.Thread(target=run).start()
ctypes.CDLL(None).pthread_exit(None)
"#;

#[test]
fn elastics_negations_decide_as_elasticsearch_on_live_execs() {
    require_root();
    require_program("gdb", "gdb");
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    for name in [GDB_RULE, CHMOD_RULE] {
        std::fs::copy(elastic_rule_path(name), rules_d.join(name)).expect("copying the rule");
    }
    // A real script in a path the rule watches (`/etc/cron*`), removed after.
    let cron = tempfile::Builder::new()
        .prefix("cron.mapwatch-test-")
        .tempdir_in("/etc")
        .expect("a directory under /etc");
    let script = cron.path().join("job");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").expect("the script");
    let parent = dir.path().join("orphaning_parent.py");
    std::fs::write(&parent, ORPHANING_PARENT).expect("the parent");
    let go = dir.path().join("go");
    let mut orphaning = std::process::Command::new("python3")
        .arg(&parent)
        .arg(&go)
        .args(["chmod", "+x"])
        .arg(&script)
        .spawn()
        .expect("starting the orphaning parent");
    wait_for_file(&dir.path().join("go.ready"));

    let mapwatch = Mapwatch::start_with(
        dir.path(),
        &format!("[rules]\ndirectories = [\"{}\"]\n", rules_d.display()),
    );
    let target = Target::spawn();
    run_entry_leader(
        "bash",
        &format!(
            "gdb -nx -batch -p 1 --version >/dev/null; gdb -nx -batch -p {pid} --version >/dev/null",
            pid = target.pid(),
        ),
        dir.path(),
    );
    std::fs::write(&go, "").expect("the go file");
    assert!(orphaning.wait().expect("the orphaning parent").success());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let of =
        |id: &str| -> Vec<&Value> { alerts.iter().filter(|a| a["rule"]["id"] == id).collect() };

    let gdb = of(GDB_ID);
    assert_eq!(gdb.len(), 1, "only the gdb without a \"1\": {gdb:#?}");
    assert!(args_of(gdb[0]).contains(&target.pid().to_string()));

    let chmod = of(CHMOD_ID);
    assert_eq!(chmod.len(), 1, "{alerts:#?}");
    let script_arg = script.display().to_string();
    assert!(args_of(chmod[0]).contains(&script_arg), "{:#}", chmod[0]);
    assert!(
        chmod[0]["process"]["parent"]["executable"].is_null(),
        "the parent's executable is missing, as the test means: {:#}",
        chmod[0]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&script)
            .expect("the script")
            .permissions(),
    );
    assert_ne!(mode & 0o111, 0, "chmod +x ran");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
