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

/// A merge of a staged table into an existing target, in the SQL PostgreSQL and SQLite share
/// (`"`-quoted names, `INSERT ... ON CONFLICT`, `UPDATE ... FROM`). MySQL's differs (`ON
/// DUPLICATE KEY UPDATE`, `UPDATE ... JOIN`) and is its sink's own.
pub struct MergeInto<'a> {
    /// The target and the staging table, quoted (`"sales"."orders"`).
    pub target: &'a str,
    pub stage: &'a str,
    /// The staged columns, as named in the staging table.
    pub staged: &'a [String],
    /// The load's key columns.
    pub keys: &'a [String],
    /// Whether the store compares column names ignoring ASCII case (SQLite does).
    pub case_insensitive: bool,
    /// The value written for the staged column named so, read from the staged row `s`:
    /// `s."amount"`, or cast to the target column's type, `s."amount"::numeric(12,2)`.
    pub value: &'a dyn Fn(&str) -> String,
}

impl MergeInto<'_> {
    /// The statements of the merge, the staging table dropped at the end. With a unique index
    /// on exactly the key (`key_index`) one upsert, `INSERT ... ON CONFLICT (key) DO UPDATE SET
    /// c = excluded.c` (`DO NOTHING` when every column is a key column); without one an `UPDATE
    /// ... FROM` of the matching rows, then an `INSERT ... WHERE NOT EXISTS` of the others.
    pub fn sql(&self, key_index: bool) -> String {
        let (target, stage) = (self.target, self.stage);
        let names = join(self.staged.iter().map(|c| quote_part(c)));
        let select = join(self.staged.iter().map(|c| (self.value)(c.as_str())));
        let updates = non_key(self.staged, self.keys, self.case_insensitive);
        let sql = if key_index {
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                let set = join(
                    updates
                        .iter()
                        .map(|c| format!("{0} = excluded.{0}", quote_part(c))),
                );
                format!("UPDATE SET {set}")
            };
            // `WHERE true` keeps SQLite from reading ON CONFLICT as part of a join.
            format!(
                "INSERT INTO {target} ({names}) SELECT {select} FROM {stage} AS s WHERE true \
                 ON CONFLICT ({}) DO {action}",
                join(self.keys.iter().map(|k| quote_part(k)))
            )
        } else {
            let matches = self
                .keys
                .iter()
                .map(|k| format!("t.{} = {}", quote_part(k), (self.value)(k.as_str())))
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut sql = String::new();
            if !updates.is_empty() {
                let set = join(
                    updates
                        .iter()
                        .map(|c| format!("{} = {}", quote_part(c), (self.value)(c.as_str()))),
                );
                sql.push_str(&format!(
                    "UPDATE {target} AS t SET {set} FROM {stage} AS s WHERE {matches}; "
                ));
            }
            sql.push_str(&format!(
                "INSERT INTO {target} ({names}) SELECT {select} FROM {stage} AS s \
                 WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})"
            ));
            sql
        };
        format!("{sql}; DROP TABLE {stage}")
    }
}

/// `name` as one quoted part of a name in standard SQL (`"it""s"`).
fn quote_part(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
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

    fn merge_sql(staged: &[&str], keys: &[&str], key_index: bool, value: &dyn Fn(&str) -> String) -> String {
        MergeInto {
            target: "\"t\"",
            stage: "\"st\"",
            staged: &strings(staged),
            keys: &strings(keys),
            case_insensitive: true,
            value,
        }
        .sql(key_index)
    }

    #[test]
    fn a_merge_upserts_with_a_key_index_and_updates_then_inserts_without() {
        let plain = |c: &str| format!("s.{}", quote_part(c));
        assert_eq!(
            merge_sql(&["ID", "x", "y\"z"], &["id"], true, &plain),
            "INSERT INTO \"t\" (\"ID\", \"x\", \"y\"\"z\") SELECT s.\"ID\", s.\"x\", s.\"y\"\"z\" FROM \"st\" AS s \
             WHERE true ON CONFLICT (\"id\") DO UPDATE SET \"x\" = excluded.\"x\", \"y\"\"z\" = excluded.\"y\"\"z\"; \
             DROP TABLE \"st\""
        );
        assert_eq!(
            merge_sql(&["id"], &["id"], true, &plain),
            "INSERT INTO \"t\" (\"id\") SELECT s.\"id\" FROM \"st\" AS s WHERE true \
             ON CONFLICT (\"id\") DO NOTHING; DROP TABLE \"st\""
        );
        let cast = |c: &str| format!("s.{}::int", quote_part(c));
        assert_eq!(
            merge_sql(&["a", "b", "x"], &["a", "b"], false, &cast),
            "UPDATE \"t\" AS t SET \"x\" = s.\"x\"::int FROM \"st\" AS s \
             WHERE t.\"a\" = s.\"a\"::int AND t.\"b\" = s.\"b\"::int; \
             INSERT INTO \"t\" (\"a\", \"b\", \"x\") SELECT s.\"a\"::int, s.\"b\"::int, s.\"x\"::int FROM \"st\" AS s \
             WHERE NOT EXISTS (SELECT 1 FROM \"t\" AS t WHERE t.\"a\" = s.\"a\"::int AND t.\"b\" = s.\"b\"::int); \
             DROP TABLE \"st\""
        );
        // Only keys: nothing to update, the others are inserted.
        assert!(merge_sql(&["id"], &["id"], false, &plain).starts_with("INSERT INTO"));
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
