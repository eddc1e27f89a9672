//! Showing file names to people. A media file may be named anything a filesystem allows:
//! newlines, tabs, escape sequences, bytes that are not UTF-8. Written raw into a warning,
//! `backup.log`, a Telegram message or a terminal, such a name could split one line into
//! two (forging a "Backup completed successfully" line) or drive the terminal. [`shown`]
//! writes control characters as Rust escapes (`\n`, `\t`, `\u{1b}`) and invalid bytes as
//! `\xNN`, so one name is always one line of plain text. (A literal backslash is left
//! as it is, so a name holding the two characters `\n` reads like an escaped newline:
//! the output is for people, and that ambiguity cannot split or forge a line.)

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
                if c.is_control() || is_invisible_trick(c) {
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

/// Characters that are not "control" to Unicode but still break or disguise a line: the
/// line and paragraph separators, and the bidirectional overrides and isolates that can
/// make `gpj.exe` display as `exe.jpg` in a chat client.
fn is_invisible_trick(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn line_separators_and_bidi_overrides_are_escaped() {
        assert_eq!(
            show("a\u{2028}b\u{202e}gpj.exe".as_bytes()),
            "a\\u{2028}b\\u{202e}gpj.exe"
        );
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(show(b"caf\xe9/\xff\xfe.jpg"), "caf\\xe9/\\xff\\xfe.jpg");
    }
}
