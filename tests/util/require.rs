//! What a test needs from the machine (a tool, root, a mount): one place that decides
//! whether a test whose need is not met is skipped (on a developer's machine) or fails
//! (in CI, where `.ci/run` installs every tool and a skip would pass unnoticed).

use std::process::Command;

/// True when the run is CI's (`CI` set to anything but empty, `0` or `false`, as CI
/// services and `.ci/run` set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Whether the calling test can do its real check. `available` is `Ok` when `what` (a
/// tool, a privilege) is there, else why not. When it is not: under CI the test fails
/// naming what is missing (a test that cannot run is not a pass); elsewhere it prints
/// `SKIPPED test: …` and the caller returns.
#[track_caller]
pub fn require(what: &str, available: Result<(), String>) -> bool {
    let current = std::thread::current();
    requirement_met(
        in_ci(),
        current.name().unwrap_or("this test"),
        what,
        available,
    )
}

/// `require` with CI or not given: panics (`ci`) or skips with a message.
#[track_caller]
fn requirement_met(ci: bool, test: &str, what: &str, available: Result<(), String>) -> bool {
    let Err(why) = available else {
        return true;
    };
    assert!(
        !ci,
        "{test} cannot run: it needs {what} ({why}); CI must provide it \
         (.ci/run installs the tools and runs as root)"
    );
    eprintln!("SKIPPED {test}: it needs {what} ({why})");
    false
}

/// `Ok` when `program args…` starts and exits 0, else what happened.
pub fn runs_ok(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// True when the tests run as root (mounts, chown, running the binary as another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `Ok` as root, else why a test needs it.
pub fn root(for_what: &str) -> Result<(), String> {
    if is_root() {
        Ok(())
    } else {
        Err(format!("not root: cannot {for_what}"))
    }
}

#[test]
fn a_missing_requirement_fails_under_ci_and_skips_elsewhere() {
    assert!(requirement_met(true, "t", "a tool", Ok(())));
    assert!(!requirement_met(false, "t", "a tool", Err("absent".into())));
    let failed = std::panic::catch_unwind(|| {
        requirement_met(true, "t", "systemd-analyze", Err("not installed".into()))
    });
    let message = failed.expect_err("a missing requirement passed under CI");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("needs systemd-analyze (not installed)"),
        "{message}"
    );
}
