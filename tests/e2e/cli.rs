//! The `hookgate` binary's commands, run as a user runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::DESIGN_EXAMPLE;

fn hookgate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookgate");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `hookgate check` accepts docs/api.md's example and names the field at fault in a
/// broken one, with exit codes a CI job can use.
#[test]
fn check_validates_receiver_configs() {
    let out = hookgate(&["check", "-"], Some(DESIGN_EXAMPLE));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<stdin>: ok: receiver \"github-pr-preview\", 2 rule(s), secrets: github_webhook_secret\n"
    );

    let broken = DESIGN_EXAMPLE.replace("\"port\": 3000", "\"port\": 70000");
    let out = hookgate(&["check", "-"], Some(&broken));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "<stdin>: rules[0].actions[1].port: expected an integer 1..65535, found 70000\n"
    );

    let out = hookgate(&["check", "/nonexistent/receiver.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("hookgate: reading /nonexistent/receiver.json: ")
    );
}
