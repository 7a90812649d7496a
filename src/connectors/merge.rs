//! What the sinks share to publish a `merge` load: the result's keys were checked before
//! staging (present, never NULL, each once: `engine::merge_key`), so a sink only decides how
//! to upsert. With a unique index (or primary key) on exactly the key columns the engine's own
//! upsert does it (`ON CONFLICT`, `ON DUPLICATE KEY UPDATE`); without one the sink updates the
//! matching rows and then inserts the others, in the same transaction, and says so in the log.

use super::{ConnectorError, Load};

/// Whether one of `indexes` (each a list of column names) covers exactly the key columns.
pub fn has_key_index(indexes: &[Vec<String>], keys: &[String], case_insensitive: bool) -> bool {
    let norm = |s: &str| {
        if case_insensitive {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let mut wanted: Vec<String> = keys.iter().map(|k| norm(k)).collect();
    wanted.sort();
    indexes.iter().any(|index| {
        let mut have: Vec<String> = index.iter().map(|c| norm(c)).collect();
        have.sort();
        have.dedup();
        have == wanted
    })
}

/// The staged columns the existing target lacks; an error naming them when there are any.
pub fn check_columns(
    load: &Load,
    staged: &[String],
    existing: &[String],
    case_insensitive: bool,
) -> Result<(), ConnectorError> {
    let missing: Vec<&str> = staged
        .iter()
        .filter(|s| {
            !existing.iter().any(|e| {
                if case_insensitive {
                    e.eq_ignore_ascii_case(s)
                } else {
                    e == *s
                }
            })
        })
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ConnectorError::permanent(format!(
            "cannot {} into {}: it has no column(s) {}",
            load.mode.as_str(),
            load.table,
            missing.join(", ")
        )))
    }
}

/// The staged columns that are not part of the key (the ones a merge updates).
pub fn non_key<'a>(staged: &'a [String], keys: &[String], case_insensitive: bool) -> Vec<&'a String> {
    staged
        .iter()
        .filter(|c| {
            !keys.iter().any(|k| {
                if case_insensitive {
                    k.eq_ignore_ascii_case(c)
                } else {
                    k == *c
                }
            })
        })
        .collect()
}

/// The log line of a merge into a table without a unique index on its key.
pub fn no_index_note(load: &Load) -> String {
    format!(
        "merge into {}: it has no unique index or primary key on ({}), so matching rows were \
         updated and the others inserted, in one transaction (a unique index on the key makes \
         this faster and keeps the key unique)",
        load.table,
        load.unique_key.join(", ")
    )
}

/// The log line of a merge that created its target.
pub fn created_note(load: &Load, what: &str) -> String {
    format!(
        "merge into {}: the table did not exist; created it with {what} on ({})",
        load.table,
        load.unique_key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::WriteMode;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_key_index_must_cover_exactly_the_key() {
        let keys = strings(&["b", "a"]);
        assert!(has_key_index(&[strings(&["a", "b"])], &keys, false));
        assert!(!has_key_index(&[strings(&["a"])], &keys, false));
        assert!(!has_key_index(&[strings(&["a", "b", "c"])], &keys, false));
        assert!(!has_key_index(&[strings(&["A", "B"])], &keys, false));
        assert!(has_key_index(&[strings(&["A", "B"])], &keys, true));
    }

    #[test]
    fn missing_columns_are_named() {
        let load = Load {
            table: "t".into(),
            mode: WriteMode::Merge,
            unique_key: strings(&["id"]),
            key: "k".into(),
        };
        assert!(check_columns(&load, &strings(&["id", "x"]), &strings(&["ID", "X", "y"]), true).is_ok());
        let e = check_columns(&load, &strings(&["id", "x"]), &strings(&["id"]), false).unwrap_err();
        assert_eq!(e.message, "cannot merge into t: it has no column(s) x");
        assert_eq!(
            non_key(&strings(&["id", "x"]), &load.unique_key, false),
            [&"x".to_string()]
        );
    }
}
