//! The binary's command line: help succeeds, a bad flag or a bad value is
//! a usage error (exit 64) in one line naming what was wrong.

use std::process::Command;
use trellis_api::contract::EXIT_USAGE;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .args(args)
        .env_clear()
        .output()
        .expect("running trellis-proxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_succeeds_and_bad_input_is_one_line_with_exit_64() {
    for args in [
        &["--help"][..],
        &["sidecar", "--help"],
        &["gateway", "--help"],
    ] {
        let (code, stdout, _) = run(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
    for (args, names) in [
        (&["--bogus"][..], "--bogus"),
        (&["sidecar", "--bogus"], "--bogus"),
        (&["sidecar", "--detect-timeout", "soon"], "--detect-timeout"),
        (
            &["sidecar", "--controller-identity", "controller"],
            "controller identity",
        ),
        (&["gateway", "--gateway", "no-namespace"], "--gateway"),
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, EXIT_USAGE, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("trellis-proxy: "), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}
