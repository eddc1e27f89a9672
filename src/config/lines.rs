//! Finds the line of a key in the config source, so that errors found after parsing
//! (cross-field checks, missing files) still name the line an operator must edit.

use toml::de::{DeTable, DeValue};

/// 1-based line of `path` (e.g. `["schedule", "full"]`) in `source`, or of the deepest
/// existing ancestor table when the key itself is absent. `None` when nothing matches.
pub fn key_line(source: &str, path: &[&str]) -> Option<usize> {
    let root = DeTable::parse(source).ok()?;
    let mut table = root.get_ref();
    let mut found: Option<usize> = None;
    for (depth, name) in path.iter().enumerate() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        found = Some(line_of(source, key.span().start));
        match value.get_ref() {
            DeValue::Table(inner) if depth + 1 < path.len() => table = inner,
            _ => break,
        }
    }
    found
}

/// 1-based line containing byte offset `offset`.
pub fn line_of(source: &str, offset: usize) -> usize {
    source
        .as_bytes()
        .iter()
        .take(offset.min(source.len()))
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "# comment\n[paths]\ndatabase = \"a.db\"\n\n[schedule]\nfull = \"0 2 * * *\"\n[alerts]\nmax_age = { full = \"26h\" }\n";

    #[test]
    fn finds_keys_in_tables() {
        assert_eq!(key_line(SRC, &["paths", "database"]), Some(3));
        assert_eq!(key_line(SRC, &["schedule", "full"]), Some(6));
        assert_eq!(key_line(SRC, &["alerts", "max_age", "full"]), Some(8));
        assert_eq!(key_line(SRC, &["schedule"]), Some(5));
        assert_eq!(key_line(SRC, &["nope"]), None);
    }
}
