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
        // `offsite[1]`: the second table of an `[[offsite]]` array.
        let (name, index) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
            Some((n, i)) => (n, i.parse::<usize>().ok()),
            None => (*name, None),
        };
        let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            return found;
        };
        found = Some(line_of(source, key.span().start));
        let value = match (value.get_ref(), index) {
            (DeValue::Array(items), Some(i)) => {
                let item = items.get(i)?;
                found = Some(line_of(source, item.span().start));
                item.get_ref()
            }
            (v, _) => v,
        };
        match value {
            DeValue::Table(inner) if depth + 1 < path.len() => table = inner,
            _ => break,
        }
    }
    found
}

/// The dotted key path (`schedule.database`) whose key or value covers byte `offset`:
/// errors from the TOML parser carry only a position, operators want the key too.
pub fn key_at(source: &str, offset: usize) -> Option<String> {
    fn search(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            // A `[section]` table's span covers only its header, so look inside every
            // table whatever its span says.
            if let DeValue::Table(inner) = value.get_ref()
                && search(inner, offset, path)
            {
                return true;
            }
            if key.span().contains(&offset) || value.span().contains(&offset) {
                return true;
            }
            path.pop();
        }
        false
    }
    let root = DeTable::parse(source).ok()?;
    let mut path = Vec::new();
    search(root.get_ref(), offset, &mut path).then(|| path.join("."))
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
    fn names_the_key_at_a_position() {
        let at = |needle: &str| SRC.find(needle).unwrap();
        assert_eq!(key_line(SRC, &["paths", "database"]), Some(3));
        assert_eq!(key_at(SRC, at("a.db")).as_deref(), Some("paths.database"));
        assert_eq!(key_at(SRC, at("0 2 *")).as_deref(), Some("schedule.full"));
        assert_eq!(
            key_at(SRC, at("26h")).as_deref(),
            Some("alerts.max_age.full")
        );
        assert_eq!(key_at(SRC, 0), None);
    }

    #[test]
    fn finds_keys_in_tables() {
        assert_eq!(key_line(SRC, &["paths", "database"]), Some(3));
        assert_eq!(key_line(SRC, &["schedule", "full"]), Some(6));
        assert_eq!(key_line(SRC, &["alerts", "max_age", "full"]), Some(8));
        assert_eq!(key_line(SRC, &["schedule"]), Some(5));
        assert_eq!(key_line(SRC, &["nope"]), None);
    }

    #[test]
    fn finds_keys_in_arrays_of_tables() {
        let src = "[[offsite]]\nname = \"a\"\n\n[[offsite]]\nname = \"b\"\nurl = \"s3://x\"\n";
        assert_eq!(key_line(src, &["offsite[1]", "url"]), Some(6));
        assert_eq!(key_line(src, &["offsite[0]", "name"]), Some(2));
        assert_eq!(key_line(src, &["offsite[0]", "url"]), Some(1));
    }
}
