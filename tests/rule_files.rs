//! Rule files: the shipped rule is the seed verbatim; anything outside the
//! EQL subset fails to load with file:line:col (exit 2); exceptions suppress
//! matches; `mapwatch rules list|check|test`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mapwatch::config::Config;
use mapwatch::rule::eql::parse_query;
use mapwatch::rule::file::parse_rule;
use mapwatch::rule::json::JsonEvent;
use serde_json::json;
use support::{BIN, mapwatch, stderr_of};

const SHIPPED: &str = include_str!("../rules/proc_maps_discovery.toml");

/// 1-based line and column of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

#[test]
fn shipped_query_is_the_seed_verbatim() {
    let seed_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/seed/proc-maps-discovery-rule.txt");
    let seed = std::fs::read_to_string(&seed_path)
        .unwrap_or_else(|e| panic!("{}: {e}", seed_path.display()));
    let start = seed.find("process where").expect("seed has the query");
    let end = start + seed[start..].find("\n)").expect("query ends with )") + 2;
    let rule = parse_rule(SHIPPED, "shipped").expect("shipped rule loads");
    assert_eq!(rule.query_text.trim(), &seed[start..end]);
    assert_eq!(rule.meta.rule_id, "2f95540c-923e-4f57-9dae-de30169c68b9");
    assert_eq!(
        (
            rule.meta.version,
            rule.meta.severity.as_str(),
            rule.meta.risk_score
        ),
        (3, "low", 21)
    );
    assert_eq!((rule.max_signals, rule.interval.as_secs()), (100, 300));
    assert_eq!(rule.meta.threats[0].tactic.id, "TA0007");
    assert_eq!(rule.meta.threats[0].techniques[0].0.id, "T1057");
}

#[test]
fn query_errors_name_what_is_unsupported_and_where() {
    let cases: [(&str, &str, &str); 22] = [
        (
            r#"process where process.nam == "cat""#,
            "process.nam",
            "unknown field `process.nam`",
        ),
        (
            r#"process where substring(process.name, 1) == "at""#,
            "substring",
            "function `substring()` is not supported",
        ),
        (r#"process where process.pid < "5""#, "\"5\"", "is a number"),
        (
            r#"process where process.name regex "c&a""#,
            "\"c&a\"",
            "intersection",
        ),
        (
            r#"process where process.name == "cat" | head 1"#,
            "|",
            "pipes",
        ),
        (
            r#"sequence [process where true] [file where true]"#,
            "[process",
            "needs `with maxspan=...`",
        ),
        (
            r#"sequence with maxspan=2h [process where true] [file where true]"#,
            "2h",
            "at most 1h",
        ),
        (
            r#"sequence with maxspan=30s [process where true]"#,
            "",
            "at least two steps",
        ),
        (
            r#"sequence by process.args with maxspan=30s [process where true] [api where true]"#,
            "process.args",
            "several values",
        ),
        (
            r#"sequence by process.pid with maxspan=30s [process where true] by process.pid [api where true]"#,
            "by process.pid [api",
            "`by` per step is not supported",
        ),
        (
            r#"sequence with maxspan=30s [process where true] [api where true] until [file where true]"#,
            "until",
            "`until` is not supported",
        ),
        (
            r#"any where process.name == "cat""#,
            "any",
            "a step of a sequence only",
        ),
        (
            r#"network where true"#,
            "network",
            "event category `network` is not supported",
        ),
        (
            r#"process where process.name == 'cat'"#,
            "'cat'",
            "single-quoted strings",
        ),
        (
            r#"process where process.pid == "1""#,
            "\"1\"",
            "is a number",
        ),
        (r#"process where process.name == 1"#, "1", "is a string"),
        (
            r#"process where process.name == "cat" and"#,
            "",
            "ends too early",
        ),
        (
            r#"process where (process.name == "cat""#,
            "",
            "expected `)`",
        ),
        (
            r#"process where process.name = "cat""#,
            "= ",
            "operator `=` is not supported",
        ),
        (
            r#"process where process.name == "a\qb""#,
            "\\q",
            "unknown escape",
        ),
        (
            r#"process process.name == "cat""#,
            "process.name",
            "expected `where`",
        ),
        (
            r#"process where process.name == "cat" process.pid == 1"#,
            "process.pid",
            "unexpected text",
        ),
    ];
    for (query, at, message) in cases {
        let err = parse_query(query).expect_err(query);
        assert!(
            err.message.contains(message),
            "`{query}`: `{}` lacks `{message}`",
            err.message
        );
        let expected = if at.is_empty() {
            query.len()
        } else {
            query.find(at).expect("position")
        };
        assert_eq!(err.offset, expected, "`{query}`: {}", err.message);
    }
}

#[test]
fn rule_file_errors_are_reported_at_file_line_column_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            SHIPPED.replace("process.name in (", "process.nmae in ("),
            "process.nmae",
            "unknown field",
        ),
        (
            SHIPPED.replace("process.args : \"/proc/*/maps\"", "process.args >= 512345"),
            "512345",
            "is a string",
        ),
        (
            SHIPPED.replace(
                "process.args : \"/proc/*/maps\"",
                "between(process.args, \"/\", \"s\")",
            ),
            "between",
            "function `between()` is not supported",
        ),
        (
            SHIPPED.replace("severity = \"low\"", "severity = \"lowish\""),
            "\"lowish\"",
            "severity",
        ),
        (
            SHIPPED.replace("interval = \"5m\"", "interval = \"5 minutes\""),
            "\"5 minutes\"",
            "interval",
        ),
        (
            SHIPPED.replace("risk_score = 21", "risk_score = 21\nrisk = 3"),
            "risk = 3",
            "unknown field `risk`",
        ),
        (
            SHIPPED.replace("type = \"eql\"", "type = \"query\""),
            "\"query\"",
            "only `eql`",
        ),
    ];
    for (i, (text, at, message)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text);
        let (line, column) = position_of(text, at);
        let out = mapwatch(&["rules", "check", path.to_str().expect("utf-8 path")]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let location = format!("{}:{line}:{column}:", path.display());
        assert!(err.contains(&location), "expected `{location}` in: {err}");
        assert!(err.contains(message), "expected `{message}` in: {err}");
    }
}

#[test]
fn rules_check_reports_every_error_of_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = SHIPPED
        .replace("severity = \"low\"", "severity = \"lowish\"")
        .replace("process.name in (", "process.nmae in (")
        .replace(
            "process.args : \"/proc/*/maps\"",
            "process.args_count == \"2\"",
        );
    let path = write(dir.path(), "three.toml", &text);
    let out = mapwatch(&["rules", "check", path.to_str().expect("utf-8 path")]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for (at, message) in [
        ("\"lowish\"", "severity"),
        ("process.nmae", "unknown field `process.nmae`"),
        ("\"2\"", "is a number"),
    ] {
        let (line, column) = position_of(&text, at);
        let expected = format!("{}:{line}:{column}: ", path.display());
        assert!(
            err.lines()
                .any(|l| l.starts_with(&expected) && l.contains(message)),
            "expected `{expected}…{message}` in:\n{err}"
        );
    }
}

#[test]
fn elastics_format_loads_and_a_rule_that_can_never_fire_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}\n[transform]\n[[transform.osquery]]\nlabel = \"x\"\nquery = \"SELECT 1\"\n",
        SHIPPED
            .replace("event.type == \"start\"", "event.type == \"end\"")
            .replace("[rule]\n", "[rule]\nbuilding_block_type = \"default\"\nrelated_integrations = [{ package = \"endpoint\" }]\n")
    );
    let path = write(dir.path(), "end.toml", &text);
    let out = mapwatch(&["rules", "check", path.to_str().expect("utf-8 path")]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("can never fire") && err.contains("`event.type` is \"start\""),
        "{err}"
    );
    let fires = write(
        dir.path(),
        "start.toml",
        &text.replace("\"end\"", "\"start\""),
    );
    let out = mapwatch(&["rules", "check", fires.to_str().expect("utf-8 path")]);
    assert_eq!(stderr_of(&out), "", "no warning for a rule that can fire");
}

#[test]
fn a_bad_rule_in_a_rule_directory_stops_start_up_unless_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("mkdir");
    write(&rules_d, "broken.toml", "[rule]\nname = \"x\"\n");
    let config = |on_error: &str| {
        write(
            dir.path(),
            &format!("{on_error}.toml"),
            &format!(
                "[rules]\ndirectories = [\"{}\"]\non_error = \"{on_error}\"\n",
                rules_d.display()
            ),
        )
    };
    let fail = config("fail");
    let out = mapwatch(&["check-config", "--config", fail.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("broken.toml:1:1"),
        "{}",
        stderr_of(&out)
    );
    let out = mapwatch(&[
        "run",
        "--foreground",
        "--config",
        fail.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "run refuses to start: {}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("broken.toml"),
        "{}",
        stderr_of(&out)
    );

    let skip = config("skip");
    let out = mapwatch(&["check-config", "--config", skip.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9 rules"),
        "the shipped rules still load"
    );
}

#[test]
fn exceptions_suppress_matches_per_rule_and_globally() {
    let with_exceptions = SHIPPED.replace(
        "[[rule.threat]]",
        r#"[[rule.exceptions]]
description = "profiler"
field = "process.parent.executable"
values = ["/opt/profiler/bin/profiler"]

[[rule.exceptions]]
description = "admins"
query = 'user.name in ("alice", "bob") and process.entry_leader.entry_meta.type == "sshd"'

[[rule.exceptions]]
description = "healthchecks"
field = "process.args"
values = ["/PROC/SELF/*"]
match = "wildcard"

[[rule.threat]]"#,
    );
    let rule = parse_rule(&with_exceptions, "test").expect("rule with exceptions loads");
    assert_eq!(rule.exceptions.len(), 3);
    let base = json!({
        "event": {"category": ["process"], "type": ["start"], "action": "exec"},
        "host": {"os": {"type": "linux"}},
        "process": {"name": "cat", "args": ["cat", "/proc/1/maps"],
                    "entry_leader": {"name": "bash", "entry_meta": {"type": "sshd"}},
                    "parent": {"executable": "/usr/bin/bash"}},
        "user": {"name": "mallory"}
    });
    let matches = |doc: &serde_json::Value| rule.matches(&mut JsonEvent::new(doc));
    assert!(matches(&base));
    let mut profiler = base.clone();
    profiler["process"]["parent"]["executable"] = json!("/opt/profiler/bin/profiler");
    assert!(!matches(&profiler), "field exception");
    let mut admin = base.clone();
    admin["user"]["name"] = json!("alice");
    assert!(!matches(&admin), "query exception");
    let mut health = base.clone();
    health["process"]["args"] = json!(["cat", "/proc/self/maps"]);
    assert!(!matches(&health), "wildcard exception");

    let global = Config::parse(
        "[[exceptions]]\ndescription = \"ops box\"\nquery = 'user.name == \"mallory\"'\n",
    )
    .expect("config with a global exception");
    let set = global.load_rules().expect("rules load");
    assert_eq!(set.global_exceptions.len(), 1);
    let mut hits = 0;
    set.evaluate(&mut JsonEvent::new(&base), &mut |_| hits += 1);
    assert_eq!(hits, 0, "global exception");
    let mut other = base.clone();
    other["user"]["name"] = json!("eve");
    set.evaluate(&mut JsonEvent::new(&other), &mut |_| hits += 1);
    assert_eq!(hits, 1);
}

#[test]
fn bad_exceptions_are_load_errors_with_positions() {
    let bad_field = SHIPPED.replace(
        "[[rule.threat]]",
        "[[rule.exceptions]]\nfield = \"process.parnet.name\"\nvalues = [\"x\"]\n\n[[rule.threat]]",
    );
    let err = parse_rule(&bad_field, "f.toml").expect_err("unknown field in exception");
    assert_eq!(
        (err.line, err.column),
        position_of(&bad_field, "\"process.parnet.name\"")
    );
    let bad_query = SHIPPED.replace(
        "[[rule.threat]]",
        "[[rule.exceptions]]\nquery = 'process.name === \"x\"'\n\n[[rule.threat]]",
    );
    let err = parse_rule(&bad_query, "f.toml").expect_err("bad exception query");
    assert_eq!(
        (err.line, err.column),
        position_of(&bad_query, "= \"x\""),
        "{err}"
    );
    let both = SHIPPED.replace(
        "[[rule.threat]]",
        "[[rule.exceptions]]\ndescription = \"nothing\"\n\n[[rule.threat]]",
    );
    assert!(parse_rule(&both, "f.toml").is_err());

    let config =
        Config::parse("\n[[exceptions]]\nquery = 'process.pid < \"3\"'\n").expect("config parses");
    let err = config.load_rules().expect_err("bad global exception");
    assert_eq!((err.line, err.column), (3, 24), "{err}");
}

#[test]
fn rules_list_shows_shipped_and_local_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("mkdir");
    let local = SHIPPED
        .replace(
            "2f95540c-923e-4f57-9dae-de30169c68b9",
            "11111111-2222-3333-4444-555555555555",
        )
        .replace("Suspicious /proc/maps Discovery", "Local maps rule");
    write(&rules_d, "local.toml", &local);
    let config = write(
        dir.path(),
        "c.toml",
        &format!("[rules]\ndirectories = [\"{}\"]\n", rules_d.display()),
    );
    let out = mapwatch(&["rules", "list", "--config", config.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("2f95540c-923e-4f57-9dae-de30169c68b9"),
        "{listing}"
    );
    assert!(listing.contains("Local maps rule"), "{listing}");
    assert!(listing.contains("local.toml"), "{listing}");

    write(&rules_d, "dup.toml", &local);
    let out = mapwatch(&["rules", "list", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("also used by"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn rules_test_prints_the_matching_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write(dir.path(), "seed.toml", SHIPPED);
    let event = |name: &str, leader: &str| {
        json!({"event": {"category": ["process"], "type": ["start"], "action": "exec"}, "host": {"os": {"type": "linux"}},
               "process": {"name": name, "args": [name, "/proc/1/maps"], "entry_leader": {"name": leader}}})
        .to_string()
    };
    let input = format!(
        "{}\n{}\n\n{}\nnot json\n",
        event("cat", "bash"),
        event("cat", "python3"),
        event("grep", "zsh")
    );
    let mut child = Command::new(BIN)
        .args(["rules", "test", rule.to_str().expect("utf-8"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write events");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, vec![event("cat", "bash"), event("grep", "zsh")]);
    let err = stderr_of(&out);
    assert!(err.contains("<stdin>:5: not a JSON document"), "{err}");
    assert!(err.contains("4 events, 2 matched, 1 invalid"), "{err}");
    assert_eq!(out.status.code(), Some(2), "an invalid line is bad input");
}
