//! The `vertex-backup` binary: parse the command line, run it, turn the outcome into an
//! exit code (0 ok, 1 failed, 2 usage or configuration, 3 done with warnings, 130
//! cancelled by Ctrl-C), and print
//! the whole error chain plus what to do about it.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            let (code, hint) = cli::classify(&err);
            eprintln!("error: {}", vertex_backup::error_chain(err.as_ref()));
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(code)
        }
    }
}
