//! What the request schemas cannot say through their derives: the bounds, patterns and value
//! sets that the validators enforce (`domain::names`, `domain::validate`,
//! `domain::store::validate_new_store`, the paging and flow queries), some of them taken from
//! the configuration, and the one rule across fields: which engine fits which kind of store and
//! which connection each needs. Each is stated once, here, from the validators' own constants,
//! so that a schema-valid request passes those checks and a request they reject is not
//! schema-valid. (Whether an id refers to something that exists, a path lies inside the allowed
//! roots or the SQL makes sense depends on the server's state: those stay 422s.)

use serde_json::{json, Map, Value};

use crate::config::Settings;
use crate::domain::checks::{CheckType, MAX_CHECK_NAME_CHARS};
use crate::domain::names::{NODE_NAME_PATTERN, STORE_NAME_PATTERN};
use crate::domain::store::{StoreEngine, StoreKind, MAX_FIELD_CHARS, MAX_PASSWORD_CHARS};
use crate::domain::validate::{
    MAX_ATTEMPTS, MAX_COLUMN_NAME_LENGTH, MAX_FLOW_TIMEOUT_S, MAX_KEY_COLUMNS, MAX_QUERY_LENGTH,
    MAX_TASK_TIMEOUT_S, TABLE_NAME_PATTERN,
};

/// A string holding at least one character that `str::trim` keeps: the validators' "must not
/// be empty". Spelled out rather than `\S`, because regex engines disagree on what `\s` is
/// (Python's counts U+001C..U+001F, Rust's `char::is_whitespace` does not).
pub const NOT_BLANK_PATTERN: &str =
    "[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// One ASCII character (CSV delimiter, quote, escape).
const ONE_ASCII_CHARACTER: &str = "^[\\u0000-\\u007f]$";

/// The largest `infer_rows` of a CSV source.
const MAX_INFER_ROWS: u64 = 1_000_000;

/// The rules, as (JSON pointer below `/components/schemas`, members to merge into the schema
/// found there).
fn rules(settings: &Settings) -> Vec<(&'static str, Value)> {
    let not_blank = |max: Option<usize>| match max {
        Some(max) => json!({"pattern": NOT_BLANK_PATTERN, "maxLength": max}),
        None => json!({"pattern": NOT_BLANK_PATTERN}),
    };
    let range = |min: u64, max: u64| json!({"minimum": min, "maximum": max});
    let one_char = json!({"minLength": 1, "maxLength": 1, "pattern": ONE_ASCII_CHARACTER});
    let kinds: Vec<&str> = StoreKind::ALL.iter().map(|k| k.as_str()).collect();
    let check_types: Vec<&str> = CheckType::ALL.iter().map(|t| t.as_str()).collect();
    let engines: Vec<&str> = StoreKind::ALL
        .iter()
        .flat_map(|k| StoreEngine::allowed_for(*k))
        .filter(|e| e.is_built_in())
        .map(|e| e.as_str())
        .fold(Vec::new(), |mut all, e| {
            if !all.contains(&e) {
                all.push(e);
            }
            all
        });
    vec![
        // POST /data-stores
        (
            "NewDataStoreRequest/properties/name",
            json!({"pattern": STORE_NAME_PATTERN}),
        ),
        ("NewDataStoreRequest/properties/kind", json!({"enum": kinds})),
        ("NewDataStoreRequest/properties/engine", json!({"enum": engines})),
        ("NewDataStoreRequest", json!({"oneOf": store_variants()})),
        (
            "ConnectionRequest/properties/type",
            json!({"enum": ["db", "file"]}),
        ),
        (
            "ConnectionRequest/properties/host",
            not_blank(Some(MAX_FIELD_CHARS)),
        ),
        (
            "ConnectionRequest/properties/user",
            not_blank(Some(MAX_FIELD_CHARS)),
        ),
        (
            "ConnectionRequest/properties/db_name",
            not_blank(Some(MAX_FIELD_CHARS)),
        ),
        ("ConnectionRequest/properties/port", range(1, u64::from(u16::MAX))),
        (
            "ConnectionRequest/properties/password",
            json!({"maxLength": MAX_PASSWORD_CHARS}),
        ),
        ("ConnectionRequest/properties/path", not_blank(None)),
        // POST /flow-inputs
        (
            "FlowInputRequest/properties/name",
            json!({"pattern": STORE_NAME_PATTERN}),
        ),
        (
            "FlowInputRequest/properties/source_store_ids/items",
            json!({"minimum": 1}),
        ),
        (
            "FlowInputRequest/properties/target_store_id",
            json!({"minimum": 1}),
        ),
        (
            "FlowInputRequest/properties/sources",
            json!({"maxItems": settings.limits.max_sources}),
        ),
        (
            "FlowInputRequest/properties/transforms",
            json!({"maxItems": settings.limits.max_transforms}),
        ),
        ("FlowInputRequest/properties/outputs", json!({"minItems": 1})),
        (
            "SourceRequest/properties/name",
            json!({"pattern": NODE_NAME_PATTERN}),
        ),
        ("SourceRequest/properties/store_id", json!({"minimum": 1})),
        (
            "SourceRequest/properties/table",
            json!({"pattern": TABLE_NAME_PATTERN}),
        ),
        (
            "SourceRequest/properties/query",
            not_blank(Some(MAX_QUERY_LENGTH)),
        ),
        ("SourceRequest/properties/path", not_blank(None)),
        // A cursor, or new_files: true (not both).
        (
            "IncrementalRequest",
            json!({"oneOf": [
                {"required": ["cursor"], "properties": {"new_files": {"enum": [false, null]}}},
                {"required": ["new_files"], "not": {"required": ["cursor"]},
                 "properties": {"new_files": {"const": true}}}
            ]}),
        ),
        // A cursor source's entry has column, after and through; a new_files source's has files.
        ("CursorEntry", json!({"required": ["rows"]})),
        (
            "IncrementalRequest/properties/cursor",
            json!({"type": "string", "pattern": NOT_BLANK_PATTERN, "maxLength": MAX_COLUMN_NAME_LENGTH}),
        ),
        ("CsvOptionsRequest/properties/delimiter", one_char.clone()),
        ("CsvOptionsRequest/properties/quote", one_char.clone()),
        ("CsvOptionsRequest/properties/escape", one_char),
        (
            "CsvOptionsRequest/properties/infer_rows",
            range(1, MAX_INFER_ROWS),
        ),
        ("Transform/properties/name", json!({"pattern": NODE_NAME_PATTERN})),
        (
            "Transform/properties/sql",
            json!({"maxLength": settings.limits.max_sql_length}),
        ),
        (
            "OutputRequest/properties/node",
            json!({"pattern": NODE_NAME_PATTERN}),
        ),
        (
            "OutputRequest/properties/mode",
            json!({"enum": ["replace", "append", "merge", null]}),
        ),
        (
            "OutputRequest/properties/unique_key",
            json!({"minItems": 1, "maxItems": MAX_KEY_COLUMNS, "uniqueItems": true}),
        ),
        (
            "OutputRequest/properties/unique_key/items",
            not_blank(Some(MAX_COLUMN_NAME_LENGTH)),
        ),
        // `unique_key` with `merge` and only there.
        (
            "OutputRequest",
            json!({"oneOf": [
                {"required": ["mode", "unique_key"],
                 "properties": {"mode": {"enum": ["merge"]}, "unique_key": {"type": "array"}}},
                {"properties": {"mode": {"enum": ["replace", "append", null]},
                                "unique_key": {"type": "null"}}}
            ]}),
        ),
        ("OptionsRequest/properties/max_parallel_tasks", range(1, 64)),
        (
            "OptionsRequest/properties/task_timeout_s",
            range(1, MAX_TASK_TIMEOUT_S),
        ),
        (
            "OptionsRequest/properties/flow_timeout_s",
            range(1, MAX_FLOW_TIMEOUT_S),
        ),
        (
            "OptionsRequest/properties/max_attempts",
            range(1, u64::from(MAX_ATTEMPTS)),
        ),
        (
            "OptionsRequest/properties/memory_limit_mb",
            range(16, settings.engine.memory_limit_mb),
        ),
        (
            "FlowInputRequest/properties/checks",
            json!({"maxItems": settings.limits.max_checks}),
        ),
        ("OutputRequest/properties/columns", json!({"minItems": 1})),
        (
            "ColumnContractRequest/properties/name",
            json!({"minLength": 1, "maxLength": 255, "pattern": NOT_BLANK_PATTERN}),
        ),
        // Checks (see `domain::checks::validate_checks`).
        (
            "CheckRequest/properties/node",
            json!({"pattern": NODE_NAME_PATTERN}),
        ),
        ("CheckRequest/properties/type", json!({"enum": check_types})),
        (
            "CheckRequest/properties/severity",
            json!({"enum": ["error", "warn", null]}),
        ),
        (
            "CheckRequest/properties/name",
            json!({"minLength": 1, "maxLength": MAX_CHECK_NAME_CHARS, "pattern": NOT_BLANK_PATTERN}),
        ),
        (
            "CheckRequest/properties/to",
            json!({"pattern": NODE_NAME_PATTERN}),
        ),
        ("CheckRequest/properties/min", json!({"minimum": 0})),
        ("CheckRequest/properties/max", json!({"minimum": 0})),
        (
            "CheckRequest/properties/values/items",
            json!({"type": ["string", "number", "boolean"]}),
        ),
        (
            "CheckRequest/properties/sql",
            json!({"maxLength": settings.limits.max_sql_length, "pattern": NOT_BLANK_PATTERN}),
        ),
        // POST /flows
        ("NewFlow/properties/flow_input_id", json!({"minimum": 1})),
        ("NewFlow/properties/retry_of", json!({"minimum": 1})),
    ]
}

/// The combinations `validate_new_store` accepts: one variant per kind and connection type,
/// with the engines that fit both. A db connection needs host, user and db_name and has no
/// path; a file connection has a path and nothing else (absent and `null` are the same).
fn store_variants() -> Vec<Value> {
    let mut variants = Vec::new();
    for kind in StoreKind::ALL {
        for conn_type in ["db", "file"] {
            let engines: Vec<&str> = StoreEngine::allowed_for(kind)
                .iter()
                .filter(|e| e.is_built_in() && e.connection_type().as_str() == conn_type)
                .map(|e| e.as_str())
                .collect();
            if engines.is_empty() {
                continue;
            }
            let connection = if conn_type == "db" {
                json!({
                    "properties": {
                        "type": {"enum": ["db"]},
                        "host": {"type": "string"},
                        "user": {"type": "string"},
                        "db_name": {"type": "string"},
                        "path": {"type": "null"},
                    },
                    "required": ["host", "user", "db_name"],
                })
            } else {
                json!({
                    "properties": {
                        "type": {"enum": ["file"]},
                        "path": {"type": "string"},
                        "host": {"type": "null"},
                        "port": {"type": "null"},
                        "user": {"type": "null"},
                        "password": {"type": "null"},
                        "db_name": {"type": "null"},
                    },
                    "required": ["path"],
                })
            };
            variants.push(json!({
                "properties": {
                    "kind": {"enum": [kind.as_str()]},
                    "engine": {"enum": engines},
                    "connection": connection,
                },
            }));
        }
    }
    variants
}

/// Merges every rule into `doc` (an OpenAPI document as JSON). Returns the pointers that
/// named no schema (a renamed type or field), which a test keeps empty.
pub fn apply(doc: &mut Value, settings: &Settings) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (pointer, members) in rules(settings) {
        let target = doc.pointer_mut(&format!("/components/schemas/{pointer}"));
        match (target, members) {
            (Some(Value::Object(schema)), Value::Object(members)) => merge(schema, members),
            _ => missing.push(pointer),
        }
    }
    missing
}

fn merge(schema: &mut Map<String, Value>, members: Map<String, Value>) {
    for (key, value) in members {
        schema.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_blank_is_what_trim_keeps() {
        let pattern = regex::Regex::new(NOT_BLANK_PATTERN).unwrap();
        for c in (0..0x3100).chain(0xfeff..0xff00).filter_map(char::from_u32) {
            let text = c.to_string();
            assert_eq!(
                pattern.is_match(&text),
                !text.trim().is_empty(),
                "U+{:04X}",
                c as u32
            );
        }
        assert!(pattern.is_match("  x  "));
        assert!(!pattern.is_match(" \t\u{3000}\n"));
    }

    #[test]
    fn one_ascii_character_is_what_single_byte_accepts() {
        let pattern = regex::Regex::new(ONE_ASCII_CHARACTER).unwrap();
        for text in [",", ";", "\t", "\0", "\u{7f}", "é", ";;", "", ",\n"] {
            let accepted = text.len() == 1 && text.is_ascii();
            let schema_valid = pattern.is_match(text) && text.chars().count() == 1;
            assert_eq!(schema_valid, accepted, "{text:?}");
        }
    }
}
