//! The wording of errors in a transform's SQL: the position in the SQL where the engine knows
//! it (or can find it). The wording of DataFusion errors in general is the connectors' (see
//! [`crate::connectors::error`]), shared by both layers.

use datafusion::error::DataFusionError;

use crate::connectors::error::{clean_message, find_connector_error};

/// An error from planning or running a transform's SQL, with its position when known:
/// `at line 1, column 8: column "amout" not found`.
pub fn sql_error_message(e: &DataFusionError, sql: &str) -> String {
    if let Some(c) = find_connector_error(e) {
        return c.message.clone();
    }
    let message = clean_message(e);
    let position = e
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0)
        .map(|s| (s.start.line, s.start.column))
        .or_else(|| guess_position(e, &message, sql));
    match position {
        Some((line, column)) => format!("SQL error at line {line}, column {column}: {message}"),
        None => format!("SQL error: {message}"),
    }
}

/// The field an error says the engine could not find: from DataFusion's `FieldNotFound`
/// schema error where the error is one, else from the wording of an error that carries only
/// text (`No field named amout. ...`).
fn missing_field(e: &DataFusionError, message: &str) -> Option<String> {
    use datafusion::common::SchemaError;
    if let DataFusionError::SchemaError(schema_error, _) = e.find_root() {
        return match schema_error.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(field.name.clone()),
            _ => None,
        };
    }
    message
        .strip_prefix("No field named ")
        .and_then(|rest| rest.split(['.', ' ']).next())
        .map(|n| n.trim_matches('"').to_string())
}

/// For errors that name a field the engine could not find, the first place the SQL mentions
/// it, counted like DataFusion's spans (sqlparser's `Location`): lines and columns from 1, the
/// column in characters.
fn guess_position(e: &DataFusionError, message: &str, sql: &str) -> Option<(u64, u64)> {
    let name = missing_field(e, message)?;
    let idx = find_ignoring_case(sql, &name)?;
    let before = &sql[..idx];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = before.matches('\n').count() as u64 + 1;
    let column = before[line_start..].chars().count() as u64 + 1;
    Some((line, column))
}

/// The byte index in `haystack` where `needle` first occurs, compared case-insensitively by
/// characters. Searched on the original text, not on a lower-cased copy: lower-casing changes
/// the byte length of some characters (`İ` is 2 bytes, its lower case 3), so an index into the
/// copy may fall inside a character of the original.
fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().flat_map(char::to_lowercase).collect();
    if needle.is_empty() {
        return None;
    }
    haystack
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| starts_with_ignoring_case(&haystack[i..], &needle))
}

/// Whether `text` starts with `lower` (already lower-cased), ending on a character boundary of
/// `text`.
fn starts_with_ignoring_case(text: &str, lower: &[char]) -> bool {
    let mut rest = lower;
    for c in text.chars() {
        for l in c.to_lowercase() {
            match rest.split_first() {
                Some((first, tail)) if *first == l => rest = tail,
                _ => return false,
            }
        }
        if rest.is_empty() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_found_for_datafusion_field_not_found_errors() {
        use datafusion::common::{Column, SchemaError};
        let e = DataFusionError::SchemaError(
            Box::new(SchemaError::FieldNotFound {
                field: Box::new(Column::new_unqualified("Amout")),
                valid_fields: vec![],
            }),
            Box::new(None),
        )
        .context("planning the query");
        let msg = sql_error_message(&e, "SELECT id,\n  amout FROM t");
        assert!(msg.starts_with("SQL error at line 2, column 3:"), "{msg}");
    }

    #[test]
    fn positions_are_guessed_for_unknown_fields() {
        let e = DataFusionError::Plan("No field named amout. Valid fields are t.amount.".into());
        let msg = sql_error_message(&e, "SELECT id,\n  amout FROM t");
        assert!(msg.starts_with("SQL error at line 2, column 3:"), "{msg}");
    }

    #[test]
    fn positions_are_found_after_characters_whose_lower_case_is_longer() {
        // `İ` (2 bytes) lower-cases to `i̇` (3 bytes), `ẞ` (3) to `ß` (2), `Ⱥ` (2) to `ⱥ` (3):
        // an index into a lower-cased copy is off, and slicing the SQL with it panicked.
        for prefix in ["İ", "İİİ", "ẞ", "Ⱥ", "KÇİ", "\u{212A}"] {
            let sql = format!("SELECT '{prefix}' AS x,\n  '{prefix}' AS y, amout FROM t");
            let e = DataFusionError::Plan("No field named amout. Valid fields are t.amount.".into());
            let msg = sql_error_message(&e, &sql);
            // Columns count characters, as DataFusion's spans do.
            let column = "  ''".len() + prefix.chars().count() + " AS y, ".len() + 1;
            assert!(
                msg.starts_with(&format!("SQL error at line 2, column {column}:")),
                "{prefix}: {msg}"
            );
        }
    }

    #[test]
    fn names_are_matched_ignoring_case_on_the_original_text() {
        assert_eq!(find_ignoring_case("SELECT İD FROM t", "i̇d"), Some(7));
        assert_eq!(find_ignoring_case("SELECT Amout FROM t", "AMOUT"), Some(7));
        assert_eq!(find_ignoring_case("ẞtraße", "straße"), None);
        assert_eq!(find_ignoring_case("ẞtraße", "ßtraße"), Some(0));
        // A name that matches only part of a character's lower case is not found there.
        assert_eq!(find_ignoring_case("İ", "i"), None);
        assert_eq!(find_ignoring_case("abc", ""), None);
    }

    #[test]
    fn positions_match_datafusions_own_spans() {
        // DataFusion's diagnostics count columns in characters too (sqlparser's tokenizer
        // advances its column once per character).
        let sql = "SELECT 'İİ', amout FROM (SELECT 1 AS amount) t";
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().sql_parser.collect_spans = true;
        let ctx = datafusion::prelude::SessionContext::new_with_config(config);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let e = rt.block_on(ctx.sql(sql)).expect_err("an unknown column");
        let span = e.diagnostic().and_then(|d| d.span).expect("a span");
        let guessed = guess_position(&e, &clean_message(&e), sql).expect("a guess");
        assert_eq!((span.start.line, span.start.column), guessed, "{e}");
    }
}
