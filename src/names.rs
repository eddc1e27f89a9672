//! Showing file names to people. A media file may be named anything a filesystem allows:
//! newlines, tabs, escape sequences, bytes that are not UTF-8. Written raw into a warning,
//! `backup.log`, a Telegram message or a terminal, such a name could split one line into
//! two (forging a "Backup completed successfully" line) or drive the terminal. [`shown`]
//! writes control characters as Rust escapes (`\n`, `\t`, `\u{1b}`) and invalid bytes as
//! `\xNN`, so one name is always one line of plain text.

use std::fmt::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path formatted for people: see the module comment.
pub struct Shown<'a>(&'a Path);

/// Format `path` for a message, escaping control characters and invalid UTF-8.
pub fn shown(path: &Path) -> Shown<'_> {
    Shown(path)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn show(bytes: &[u8]) -> String {
        shown(Path::new(OsStr::from_bytes(bytes))).to_string()
    }

    #[test]
    fn plain_names_are_unchanged() {
        assert_eq!(
            show("media/клиент 1/фото.jpg".as_bytes()),
            "media/клиент 1/фото.jpg"
        );
    }

    #[test]
    fn control_characters_are_escaped_so_a_name_stays_on_one_line() {
        let s = show(b"a\nBackup completed successfully\tb\x1b[31m");
        assert_eq!(s, "a\\nBackup completed successfully\\tb\\u{1b}[31m");
        assert!(!s.contains('\n') && !s.contains('\t') && !s.contains('\x1b'));
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(show(b"caf\xe9/\xff\xfe.jpg"), "caf\\xe9/\\xff\\xfe.jpg");
    }
}
