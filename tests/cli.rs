//! The command line's contract for bad input: usage and configuration errors
//! exit 2 with a message naming what is wrong; runtime errors exit 1; nothing
//! touches the kernel's audit state on the way out.

mod support;

use std::process::Command;

use support::{BIN, mapwatch, require_root, snapshot, stderr_of};

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = mapwatch(&["run", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("--frobnicate"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = mapwatch(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn bad_format_value_is_a_usage_error() {
    let out = mapwatch(&["run", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("xml"), "{}", stderr_of(&out));
}

#[test]
fn version_and_help() {
    let out = mapwatch(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = mapwatch(&["run", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--foreground"));
}

#[test]
fn bad_config_names_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[audit]\nbacklog_limit = 100\nbaklog_limit = 5\n")
        .expect("write config");
    let path = path.to_str().expect("utf-8 temp path");
    for args in [
        vec!["check-config", "--config", path],
        vec!["run", "--foreground", "--config", path],
    ] {
        let out = mapwatch(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("baklog_limit"), "{args:?}: {err}");
        assert!(err.contains("line 3"), "{args:?}: {err}");
        assert!(err.contains("bad.toml"), "{args:?}: {err}");
    }
}

#[test]
fn missing_explicit_config_exits_2() {
    let out = mapwatch(&["check-config", "--config", "/nonexistent/mapwatch.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("/nonexistent/mapwatch.toml"));
}

#[test]
fn shipped_config_checks_ok() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/mapwatch.toml");
    let out = mapwatch(&["check-config", "--config", shipped]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn without_root_it_exits_1_naming_the_capability() {
    require_root();
    support::require_program("setpriv", "util-linux");
    let before = snapshot();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
        ])
        .args(["run", "--foreground", "--format", "json"])
        .output()
        .expect("running setpriv");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CAP_AUDIT_CONTROL"), "{err}");
    assert!(out.stdout.is_empty(), "nothing but alerts on stdout");
    assert_eq!(snapshot(), before, "a refused start changes nothing");
}

#[test]
fn a_config_others_can_write_is_refused() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mapwatch.toml");
    std::fs::write(&path, "").expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = mapwatch(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("refusing a file that non-root users can change"),
        "{}",
        stderr_of(&out)
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        mapwatch(&["check-config", "--config", path.to_str().expect("utf-8")])
            .status
            .success()
    );
}
