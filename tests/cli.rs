//! The command line's own surface against the real binary: `completions` and `man` need
//! no config and name every command, and `notify-test` against a Telegram API nobody
//! listens on prints the network cause, not just "error sending request".

use std::net::TcpListener;

use crate::telegram::telegram_section;
use crate::util::*;

/// The commands every generated file must name (the ones `--help` lists).
fn commands() -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = run_without_config(dir.path(), &["--help"]);
    help.assert_code(0);
    let listed: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(listed.len() >= 10, "{}", help.describe());
    listed
}

/// The binary with `args` and a config path that does not exist, from a scratch dir.
fn run_without_config(dir: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(dir.join("no-such-config.toml"))
        .args(args)
        .current_dir(dir)
        .env_remove("VERTEX_BACKUP_CONFIG");
    run(cmd)
}

#[test]
fn completions_and_the_man_page_name_every_command_without_a_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let commands = commands();
    for shell in ["bash", "zsh", "fish"] {
        let run = run_without_config(dir.path(), &["completions", shell]);
        run.assert_code(0);
        for command in &commands {
            assert!(
                run.stdout.contains(command.as_str()),
                "{shell} completion lacks `{command}`"
            );
        }
    }
    let man = run_without_config(dir.path(), &["man"]);
    man.assert_code(0);
    assert!(
        man.stdout.contains(".TH vertex-backup 1"),
        "{}",
        man.describe()
    );
    for command in &commands {
        let shown = command.replace('-', "\\-");
        assert!(
            man.stdout.contains(&format!(".SS {shown}\n")),
            "man page lacks `{command}`"
        );
    }
    // What a config-reading command says about the same missing file: the two above
    // really ran without one.
    let list = run_without_config(dir.path(), &["list"]);
    assert_ne!(list.code(), Some(0), "{}", list.describe());
}

#[test]
fn notify_test_against_a_closed_port_prints_connection_refused() {
    // A port that was just free and has no listener now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &telegram_section(
            &format!("http://127.0.0.1:{port}"),
            "42",
            "\"failure\"",
            "5s",
        ),
    ));
    let run = app.run(["notify-test"]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr.to_lowercase().contains("connection refused"),
        "the network cause is missing:\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("TESTsecretTOKEN"),
        "{}",
        run.describe()
    );
}
