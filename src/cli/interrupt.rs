//! Ctrl-C for the CLI's mutating commands (`create`, `restore`): like the daemon's
//! SIGTERM, the first SIGINT only sets the operation's [`Cancel`], so the engine stops at
//! its next check, removes what it wrote and journals a "cancelled" failure (exit 130);
//! a second SIGINT exits at once for an operator who will not wait. Read-only commands
//! keep the default (die at once: there is nothing to clean).

use std::sync::Arc;

use signal_hook::consts::SIGINT;
use vertex_backup::engine::Cancel;

/// The exit code of an operation cancelled by SIGINT (128 + 2, the shell's convention).
pub const EXIT_INTERRUPTED: u8 = 130;

/// A [`Cancel`] that the next Ctrl-C sets.
pub fn cancel_on_sigint() -> Cancel {
    let cancel = Cancel::new();
    let flag = cancel.flag();
    // Registered first, the conditional shutdown sees the flag as the previous SIGINT
    // left it: set means this is the second Ctrl-C, and the process exits right away.
    let installed = signal_hook::flag::register_conditional_shutdown(
        SIGINT,
        EXIT_INTERRUPTED.into(),
        Arc::clone(&flag),
    )
    .and_then(|_| signal_hook::flag::register(SIGINT, flag));
    if let Err(e) = installed {
        eprintln!("warning: cannot handle Ctrl-C ({e}); interrupting may leave a partial file");
    }
    cancel
}
