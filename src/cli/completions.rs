//! `completions SHELL` and `man`: shell completion scripts and the manual page, generated
//! from the clap definitions in [`super::Cli`] so they can never list a flag the binary
//! does not have (or miss one it has). `scripts/install.sh` installs both.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::cli_command;

/// The name completions are registered for and the man page is titled with.
const BIN_NAME: &str = "vertex-backup";

/// The completion script for `shell`, on stdout.
pub fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    out!("{}", completion_script(shell)?);
    Ok(ExitCode::SUCCESS)
}

/// The manual page (roff), on stdout.
pub fn print_man_page() -> anyhow::Result<ExitCode> {
    out!("{}", man_page()?);
    Ok(ExitCode::SUCCESS)
}

fn completion_script(shell: clap_complete::Shell) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli_command(), BIN_NAME, &mut buf);
    Ok(String::from_utf8(buf)?)
}

/// One page for the whole program: clap_mangen's sections of the top-level command (name,
/// synopsis, global options), then a COMMANDS section with each command's usage and
/// options — `man vertex-backup` answers "what does `restore --target` do" without a page
/// per subcommand (clap_mangen's own subcommand list points to such pages, which do not
/// exist, so it is left out).
fn man_page() -> anyhow::Result<String> {
    let mut cmd = cli_command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    let mut page = String::from_utf8(buf)?;
    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_section(&mut page, sub);
    }
    let mut buf = Vec::new();
    man.render_version_section(&mut buf)?;
    page.push_str(&String::from_utf8(buf)?);
    Ok(page)
}

/// `.SS name`, the command's description, its usage and each of its own (not global)
/// arguments as a tagged paragraph.
fn command_section(page: &mut String, sub: &clap::Command) {
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let usage = sub.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let _ = writeln!(page, ".SS {}", escape(sub.get_name()));
    let _ = writeln!(page, "{}", escape(&about));
    let _ = writeln!(page, ".PP\n\\fB{}\\fR", escape(usage));
    let own = sub
        .get_arguments()
        .filter(|a| !a.is_global_set() && !a.is_hide_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"));
    for arg in own {
        let _ = writeln!(page, ".TP\n\\fB{}\\fR", escape(&arg_label(arg)));
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let _ = writeln!(page, "{}", escape(&help));
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() {
            let _ = writeln!(page, ".br\nvalues: {}", escape(&values.join(", ")));
        }
        // A flag's "default: false" says nothing.
        let default = arg
            .get_default_values()
            .first()
            .filter(|_| takes_value(arg));
        if let Some(default) = default {
            let _ = writeln!(page, ".br\ndefault: {}", escape(&default.to_string_lossy()));
        }
    }
}

/// `-t, --type <TYPE>` for an option, `<PATH>` for a positional.
fn arg_label(arg: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    match (names.is_empty(), takes_value(arg)) {
        (true, _) => format!("<{value}>"),
        (false, true) => format!("{} <{value}>", names.join(", ")),
        (false, false) => names.join(", "),
    }
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

/// Text safe inside roff: backslashes escaped, a line starting with `.` or `'` not read
/// as a request, and `-` as the minus sign man renders in flags.
fn escape(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand and every argument anywhere in the tree: what `--help`, the
    /// completions and the man page show.
    fn walk(cmd: &clap::Command, path: &str, visit: &mut dyn FnMut(&str, &clap::Command)) {
        visit(path, cmd);
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), visit);
        }
    }

    fn subcommand_names() -> Vec<String> {
        let mut cmd = cli_command();
        cmd.build();
        cmd.get_subcommands()
            .filter(|s| s.get_name() != "help")
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn every_subcommand_and_argument_has_help_text() {
        let mut cmd = cli_command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, BIN_NAME, &mut |path, c| {
            if c.get_about().is_none() && c.get_long_about().is_none() {
                missing.push(format!("command `{path}`"));
            }
            for arg in c.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("`{path}` argument `{}`", arg.get_id()));
                }
            }
        });
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        // The walk saw the tree: a test that checks nothing must not pass.
        assert!(subcommand_names().len() >= 10, "{:?}", subcommand_names());
    }

    #[test]
    fn max_backups_help_says_where_it_has_effect() {
        let cmd = cli_command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some("max-backups"))
            .expect("--max-backups");
        let help = arg.get_help().expect("help").to_string();
        for command in super::super::MAX_BACKUPS_USED_BY {
            assert!(help.contains(&format!("`{command}`")), "{help}");
        }
        // Shown in the help of the commands it changes, and only there.
        let mut cmd = cli_command();
        cmd.build();
        for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let name = sub.get_name().to_string();
            let text = sub.render_help().to_string();
            let used = super::super::MAX_BACKUPS_USED_BY.contains(&name.as_str());
            assert_eq!(
                text.contains("--max-backups"),
                used,
                "`{name} --help`:\n{text}"
            );
        }
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_name_every_subcommand() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion_script(shell).unwrap();
            assert!(script.len() > 1000, "{shell}: {script}");
            assert!(script.contains(BIN_NAME), "{shell}");
            for name in subcommand_names() {
                assert!(script.contains(&name), "{shell} completion lacks `{name}`");
            }
            assert!(script.contains("max-backups"), "{shell}");
        }
    }

    #[test]
    fn the_man_page_describes_every_subcommand_and_its_flags() {
        let page = man_page().unwrap();
        assert!(page.contains(".TH vertex-backup 1 "), "{page}");
        for name in subcommand_names() {
            let name = escape(&name);
            assert!(
                page.contains(&format!(".SS {name}\n")),
                "no section for `{name}`"
            );
        }
        // A subcommand's own flag with its help, and no raw line a roff reader would eat.
        assert!(page.contains("\\-\\-dry\\-run"), "{page}");
        assert!(page.contains("Print what would be deleted"), "{page}");
        assert!(page.contains("\\-\\-max\\-backups"), "{page}");
        // No pointer to per-command pages that are not installed.
        assert!(!page.contains("create(1)"), "{page}");
    }

    #[test]
    fn roff_escaping_keeps_text_literal() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b --x"), "a\\eb \\-\\-x");
    }
}
