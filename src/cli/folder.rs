//! Flow inputs as folders, the way data engineers keep SQL: one `.sql` file per transform (the
//! transform's name is the file's stem) beside one manifest, `sluice.toml`, with the rest of the
//! flow input (sources, outputs, options, checks, ...; data stores by name or id). This module
//! turns such a folder into the body of `POST /flow-inputs`, and maps the problems the server
//! reports on that body (`transforms[2].sql` with `line 3, column 7` in its message,
//! `sources[1].path`, ...) back to the file and line they come from. It knows nothing of HTTP:
//! resolving store names is given the stores by the caller.
//!
//! The manifest is the JSON body written in TOML, with these conveniences (docs/folders.md):
//! - `name` defaults to the folder's name;
//! - a source names its store with `store = "name"` (or an id), or `store_id = 1`;
//!   `target_store` likewise (or `target_store_id`);
//! - `source_stores` / `source_store_ids` default to the stores the sources read, in order;
//! - `[transforms.NAME]` tables add settings (`materialize = true`) to the transform in
//!   `NAME.sql`; the SQL itself only comes from the file.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};

use crate::domain::names::did_you_mean_hint;

/// The manifest's file name.
pub const MANIFEST: &str = "sluice.toml";

/// A problem in a folder, where it is: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A data store as the manifest may name it.
#[derive(Debug, Clone, PartialEq)]
enum StoreRef {
    Name(String),
    Id(i64),
}

/// Where a store reference goes in the body.
#[derive(Debug, Clone)]
enum Slot {
    Target,
    /// `source_store_ids[i]`, given in the manifest.
    SourceStore(usize),
    /// `sources[i].store_id`.
    Source(usize),
}

/// A loaded folder: the request body (store names not resolved yet), and where everything in it
/// came from.
#[derive(Debug)]
pub struct Folder {
    pub dir: PathBuf,
    manifest: PathBuf,
    manifest_text: String,
    body: Map<String, Value>,
    /// Store references to resolve, with the TOML path of each (for its line).
    stores: Vec<(Slot, StoreRef, String)>,
    /// Whether `source_store_ids` was given (else it follows from the sources).
    source_stores_given: bool,
    /// Byte spans in the manifest of every key's value, by TOML path (`sources[1].csv.columns`).
    spans: HashMap<String, Range<usize>>,
    /// Per transform (in body order): its file and the manifest path of its settings, if any.
    transforms: Vec<(String, PathBuf)>,
}

fn problem(file: &Path, line: usize, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line,
        column: None,
        message: message.into(),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Converts a TOML value into JSON, recording the span of every value under `path`.
fn to_json(
    value: &DeValue<'_>,
    span: Range<usize>,
    path: &str,
    spans: &mut HashMap<String, Range<usize>>,
) -> Value {
    spans.insert(path.to_string(), span);
    match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            i64::from_str_radix(i.as_str().replace('_', "").trim_start_matches('+'), i.radix())
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(i.as_str().to_string()))
        }
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(f.as_str().to_string()), Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(item.get_ref(), item.span(), &format!("{path}[{i}]"), spans))
                .collect(),
        ),
        DeValue::Table(table) => Value::Object(table_to_json(table, path, spans)),
    }
}

fn table_to_json(
    table: &DeTable<'_>,
    path: &str,
    spans: &mut HashMap<String, Range<usize>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in table.iter() {
        let key = key.get_ref().to_string();
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        // A key's line is where the key is written (for `[[sources]]`, the element's first key).
        let json = to_json(value.get_ref(), value.span(), &child, spans);
        out.insert(key, json);
    }
    out
}

fn store_ref(value: &Value) -> Option<StoreRef> {
    match value {
        Value::String(s) => Some(StoreRef::Name(s.clone())),
        Value::Number(n) => n.as_i64().map(StoreRef::Id),
        _ => None,
    }
}

impl Folder {
    /// Reads `dir`: its manifest and every `*.sql` file in it (not in subfolders), transforms in
    /// file-name order. Every problem found is returned, each with its file and line.
    pub fn load(dir: &Path) -> Result<Folder, Vec<Problem>> {
        let manifest = dir.join(MANIFEST);
        let manifest_text = std::fs::read_to_string(&manifest).map_err(|e| {
            vec![problem(
                &manifest,
                0,
                format!("cannot read the manifest: {e} (a flow input folder holds a {MANIFEST} and one .sql file per transform)"),
            )]
        })?;
        let mut problems = Vec::new();
        let mut spans = HashMap::new();
        let mut body = {
            let (document, errors) = DeTable::parse_recoverable(&manifest_text);
            for e in errors {
                let (line, column) = e.span().map_or((0, 0), |s| line_col(&manifest_text, s.start));
                problems.push(Problem {
                    file: manifest.clone(),
                    line,
                    column: (line > 0).then_some(column),
                    message: format!("TOML: {}", e.message()),
                });
            }
            table_to_json(document.get_ref(), "", &mut spans)
        };

        // SQL files, by name.
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
                .collect(),
            Err(e) => {
                problems.push(problem(dir, 0, format!("cannot list the folder: {e}")));
                Vec::new()
            }
        };
        files.sort();
        let mut settings = match body.remove("transforms") {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                let line = spans
                    .get("transforms")
                    .map_or(0, |s| line_col(&manifest_text, s.start).0);
                problems.push(problem(
                    &manifest,
                    line,
                    "transforms: a table of per-transform settings ([transforms.NAME]); the SQL of a transform is the file NAME.sql",
                ));
                Map::new()
            }
        };
        let mut transforms = Vec::new();
        let mut bodies = Vec::new();
        for file in files {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sql = match std::fs::read_to_string(&file) {
                Ok(sql) => sql,
                Err(e) => {
                    problems.push(problem(&file, 0, format!("cannot read: {e}")));
                    continue;
                }
            };
            let mut t = Map::new();
            t.insert("name".into(), Value::String(name.clone()));
            t.insert("sql".into(), Value::String(sql));
            match settings.remove(&name) {
                None => {}
                Some(Value::Object(extra)) => {
                    for (key, value) in extra {
                        if key == "sql" || key == "name" {
                            let line = spans
                                .get(&format!("transforms.{name}.{key}"))
                                .map_or(0, |s| line_col(&manifest_text, s.start).0);
                            problems.push(problem(
                                &manifest,
                                line,
                                format!("transforms.{name}.{key}: a transform's {key} comes from its file {name}.sql"),
                            ));
                        } else {
                            t.insert(key, value);
                        }
                    }
                }
                Some(_) => {
                    let line = spans
                        .get(&format!("transforms.{name}"))
                        .map_or(0, |s| line_col(&manifest_text, s.start).0);
                    problems.push(problem(
                        &manifest,
                        line,
                        format!("transforms.{name}: a table of settings, e.g. materialize = true"),
                    ));
                }
            }
            transforms.push((name, file));
            bodies.push(Value::Object(t));
        }
        for name in settings.keys() {
            let line = spans
                .get(&format!("transforms.{name}"))
                .map_or(0, |s| line_col(&manifest_text, s.start).0);
            problems.push(problem(
                &manifest,
                line,
                format!("[transforms.{name}] has no file {name}.sql in the folder"),
            ));
        }
        body.insert("transforms".into(), Value::Array(bodies));

        if !body.contains_key("name") {
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            body.insert("name".into(), Value::String(name));
        }

        // Store references.
        let mut stores = Vec::new();
        let line_of = |path: &str| spans.get(path).map_or(0, |s| line_col(&manifest_text, s.start).0);
        let take = |body: &mut Map<String, Value>,
                    problems: &mut Vec<Problem>,
                    short: &str,
                    long: &str|
         -> Option<(Value, String)> {
            match (body.remove(short), body.contains_key(long)) {
                (Some(_), true) => {
                    problems.push(problem(
                        &manifest,
                        line_of(short),
                        format!("{short} and {long} both name the store: keep one"),
                    ));
                    None
                }
                (Some(v), false) => Some((v, short.to_string())),
                (None, _) => None,
            }
        };
        if let Some((value, path)) = take(&mut body, &mut problems, "target_store", "target_store_id") {
            match store_ref(&value) {
                Some(r) => stores.push((Slot::Target, r, path)),
                None => problems.push(problem(
                    &manifest,
                    line_of(&path),
                    "target_store: a data store's name or id",
                )),
            }
        }
        let source_stores_given = body.contains_key("source_store_ids") || body.contains_key("source_stores");
        if let Some((value, path)) = take(&mut body, &mut problems, "source_stores", "source_store_ids") {
            match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match store_ref(item) {
                            Some(r) => stores.push((Slot::SourceStore(i), r, format!("{path}[{i}]"))),
                            None => problems.push(problem(
                                &manifest,
                                line_of(&format!("{path}[{i}]")),
                                "source_stores: data stores' names or ids",
                            )),
                        }
                    }
                    body.insert(
                        "source_store_ids".into(),
                        Value::Array(vec![Value::Null; items.len()]),
                    );
                }
                _ => problems.push(problem(
                    &manifest,
                    line_of(&path),
                    "source_stores: a list of data stores' names or ids",
                )),
            }
        }
        if let Some(Value::Array(sources)) = body.get_mut("sources") {
            for (i, source) in sources.iter_mut().enumerate() {
                let Value::Object(source) = source else { continue };
                let short = format!("sources[{i}].store");
                match (source.remove("store"), source.contains_key("store_id")) {
                    (Some(_), true) => problems.push(problem(
                        &manifest,
                        line_of(&short),
                        format!("{short} and sources[{i}].store_id both name the store: keep one"),
                    )),
                    (Some(value), false) => match store_ref(&value) {
                        Some(r) => {
                            stores.push((Slot::Source(i), r, short));
                            source.insert("store_id".into(), Value::Null);
                        }
                        None => problems.push(problem(
                            &manifest,
                            line_of(&short),
                            format!("{short}: a data store's name or id"),
                        )),
                    },
                    (None, _) => {}
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Folder {
            dir: dir.to_path_buf(),
            manifest,
            manifest_text,
            body,
            stores,
            source_stores_given,
            spans,
            transforms,
        })
    }

    /// Whether the folder names any data store by name (then `body` needs the stores).
    pub fn names_stores(&self) -> bool {
        self.stores.iter().any(|(_, r, _)| matches!(r, StoreRef::Name(_)))
    }

    /// The body of `POST /flow-inputs`, store names resolved against `stores` (id, name).
    pub fn body(&self, stores: &[(i64, String)]) -> Result<Value, Vec<Problem>> {
        let mut body = self.body.clone();
        let mut problems = Vec::new();
        for (slot, reference, path) in &self.stores {
            let id = match reference {
                StoreRef::Id(id) => *id,
                StoreRef::Name(name) => match stores.iter().find(|(_, n)| n == name) {
                    Some((id, _)) => *id,
                    None => {
                        let hint = did_you_mean_hint(name, stores.iter().map(|(_, n)| n.as_str()));
                        problems
                            .push(self.at_manifest(path, format!("no data store is named {name:?}{hint}")));
                        continue;
                    }
                },
            };
            match slot {
                Slot::Target => {
                    body.insert("target_store_id".into(), Value::from(id));
                }
                Slot::SourceStore(i) => {
                    if let Some(slot) = body
                        .get_mut("source_store_ids")
                        .and_then(|v| v.as_array_mut())
                        .and_then(|a| a.get_mut(*i))
                    {
                        *slot = Value::from(id);
                    }
                }
                Slot::Source(i) => {
                    if let Some(source) = body
                        .get_mut("sources")
                        .and_then(|v| v.as_array_mut())
                        .and_then(|a| a.get_mut(*i))
                        .and_then(|s| s.as_object_mut())
                    {
                        source.insert("store_id".into(), Value::from(id));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if !self.source_stores_given {
            let mut ids: Vec<Value> = Vec::new();
            for source in body
                .get("sources")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let id = source["store_id"].clone();
                if id.is_i64() && !ids.contains(&id) {
                    ids.push(id);
                }
            }
            body.insert("source_store_ids".into(), Value::Array(ids));
        }
        Ok(Value::Object(body))
    }

    /// A problem at the manifest value at TOML path `path` (or the nearest enclosing one).
    fn at_manifest(&self, path: &str, message: String) -> Problem {
        let mut candidate = path.to_string();
        loop {
            if let Some(span) = self.spans.get(&candidate) {
                let (line, column) = line_col(&self.manifest_text, span.start);
                return Problem {
                    file: self.manifest.clone(),
                    line,
                    column: Some(column),
                    message,
                };
            }
            match candidate.rfind(['.', '[']) {
                Some(cut) => candidate.truncate(cut),
                None => {
                    return Problem {
                        file: self.manifest.clone(),
                        line: 0,
                        column: None,
                        message,
                    }
                }
            }
        }
    }

    /// Where the server's problem at body path `path` (`transforms[2].sql`,
    /// `sources[0].store_id`, ...) comes from. A SQL position in `message` (`line 3, column
    /// 7`) points into the `.sql` file.
    pub fn locate(&self, path: &str, message: &str) -> Problem {
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        if let Some(rest) = path.strip_prefix("transforms[") {
            let (index, field) = rest.split_once(']').unwrap_or((rest, ""));
            let field = field.trim_start_matches('.');
            if let Some((name, file)) = index.parse::<usize>().ok().and_then(|i| self.transforms.get(i)) {
                if field.is_empty() || field == "sql" || field == "name" {
                    let (line, column) = sql_position(&message).unwrap_or((1, 1));
                    return Problem {
                        file: file.clone(),
                        line,
                        column: Some(column),
                        message,
                    };
                }
                return self.at_manifest(&format!("transforms.{name}.{field}"), message);
            }
        }
        let toml_path = if let Some(rest) = path.strip_prefix("target_store_id") {
            if self.spans.contains_key("target_store") {
                format!("target_store{rest}")
            } else {
                path.to_string()
            }
        } else if let Some(rest) = path.strip_prefix("source_store_ids") {
            if self.spans.contains_key("source_stores") {
                format!("source_stores{rest}")
            } else if self.source_stores_given {
                path.to_string()
            } else {
                "sources".to_string()
            }
        } else if path.starts_with("sources[") && path.ends_with("].store_id") {
            let store = format!("{}.store", path.trim_end_matches(".store_id"));
            if self.spans.contains_key(&store) {
                store
            } else {
                path.to_string()
            }
        } else {
            path.to_string()
        };
        let mut found = self.at_manifest(&toml_path, message);
        // A SQL position inside a query written in the manifest: from the string's first line
        // (a `"""` string that starts with a line break begins on the next line).
        if let (Some((line, column)), Some(span)) = (sql_position(&found.message), self.spans.get(&toml_path))
        {
            let raw = self.manifest_text.get(span.clone()).unwrap_or_default();
            let skip = usize::from(raw.starts_with("\"\"\"\n") || raw.starts_with("'''\n"));
            found.line += line - 1 + skip;
            found.column = Some(if line == 1 && skip == 0 {
                found.column.unwrap_or(1) + column
            } else {
                column
            });
        }
        found
    }
}

impl Folder {
    /// Where a SQL error of transform `task` that a flow reported (`SQL error at line 2,
    /// column 3: ...`) is: its `.sql` file, at the position when the error names one.
    pub fn locate_task_error(&self, task: &str, error: &str) -> Option<Problem> {
        let (_, file) = self.transforms.iter().find(|(name, _)| name == task)?;
        let (line, column) = sql_position(error)?;
        Some(Problem {
            file: file.clone(),
            line,
            column: Some(column),
            message: format!("{task}: {error}"),
        })
    }
}

/// The first `line L, column C` in a message.
fn sql_position(message: &str) -> Option<(usize, usize)> {
    let at = message.find("line ")?;
    let rest = &message[at + 5..];
    let (line, rest) = rest.split_once(", column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn folder(manifest: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("marts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), manifest).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        (temp, dir)
    }

    const MANIFEST_TEXT: &str = r#"target_store = "warehouse"

[[sources]]
name = "orders"
store = "raw"
path = "orders.csv"
csv = { null_values = ["", "N/A"] }

[[sources]]
name = "customers"
store_id = 7
query = """
SELECT id,
  nme FROM customers"""

[[outputs]]
node = "fct"
table = "fct"

[transforms.stg]
materialize = true

[options]
max_parallel_tasks = 2
"#;

    #[test]
    fn a_folder_becomes_the_json_body_with_stores_resolved() {
        let (_t, dir) = folder(
            MANIFEST_TEXT,
            &[
                ("stg.sql", "SELECT * FROM orders\n"),
                ("fct.sql", "SELECT count(*) AS n\nFROM stg"),
                ("notes.txt", "ignored"),
            ],
        );
        let f = Folder::load(&dir).unwrap();
        assert!(f.names_stores());
        let body = f.body(&[(3, "raw".into()), (4, "warehouse".into())]).unwrap();
        assert_eq!(
            body,
            json!({
                "name": "marts",
                "target_store_id": 4,
                "source_store_ids": [3, 7],
                "sources": [
                    {"name": "orders", "store_id": 3, "path": "orders.csv", "csv": {"null_values": ["", "N/A"]}},
                    {"name": "customers", "store_id": 7, "query": "SELECT id,\n  nme FROM customers"}
                ],
                "outputs": [{"node": "fct", "table": "fct"}],
                "transforms": [
                    {"name": "fct", "sql": "SELECT count(*) AS n\nFROM stg"},
                    {"name": "stg", "sql": "SELECT * FROM orders\n", "materialize": true}
                ],
                "options": {"max_parallel_tasks": 2}
            })
        );
        let unknown = f
            .body(&[(3, "raw".into()), (4, "wharehouse".into())])
            .unwrap_err();
        assert_eq!(
            unknown[0].to_string(),
            format!(
                "{}:1:16: no data store is named \"warehouse\" (did you mean \"wharehouse\"?)",
                dir.join(MANIFEST).display()
            )
        );
    }

    #[test]
    fn server_problems_point_at_files_and_lines() {
        let (_t, dir) = folder(
            MANIFEST_TEXT,
            &[
                ("stg.sql", "SELECT * FROM orders\n"),
                ("fct.sql", "SELECT count(*) AS n\nFROM stgg"),
            ],
        );
        let f = Folder::load(&dir).unwrap();
        let m = dir.join(MANIFEST);
        let p = f.locate(
            "transforms[0].sql",
            "unknown table \"stgg\" (at line 2, column 6) (did you mean \"stg\"?)",
        );
        assert_eq!(
            (p.file.clone(), p.line, p.column),
            (dir.join("fct.sql"), 2, Some(6))
        );
        assert!(p.to_string().ends_with("fct.sql:2:6: transforms[0].sql: unknown table \"stgg\" (at line 2, column 6) (did you mean \"stg\"?)"), "{p}");
        let p = f.locate("transforms[1].materialize", "bad");
        assert_eq!((p.file.clone(), p.line), (m.clone(), 21));
        assert_eq!(f.locate("sources[0].path", "no").line, 6);
        assert_eq!(f.locate("sources[0].store_id", "no").line, 5);
        assert_eq!(f.locate("sources[0].csv.delimiter", "no").line, 7);
        assert_eq!(f.locate("target_store_id", "no").line, 1);
        assert_eq!(f.locate("source_store_ids[1]", "no").line, 3);
        assert_eq!(f.locate("options.max_parallel_tasks", "no").line, 24);
        assert_eq!(f.locate("options.fail_fast", "no").line, 23, "the table's header");
        assert_eq!(f.locate("name", "no").line, 0);
        // A position in a query written in the manifest counts from the string's first line.
        let p = f.locate("sources[1].query", "SQL error at line 2, column 3: nme");
        assert_eq!((p.line, p.column), (14, Some(3)));
        // An error a flow reports for a transform.
        let p = f
            .locate_task_error("fct", "SQL error at line 2, column 6: no table stgg")
            .unwrap();
        assert_eq!(
            p.to_string(),
            format!(
                "{}:2:6: fct: SQL error at line 2, column 6: no table stgg",
                dir.join("fct.sql").display()
            )
        );
        assert!(f.locate_task_error("fct", "connection refused").is_none());
        assert!(f
            .locate_task_error("orders", "SQL error at line 1, column 1: x")
            .is_none());
    }

    #[test]
    fn every_folder_problem_is_reported_with_its_line() {
        let (_t, dir) = folder(
            "target_store = \"w\"\ntarget_store_id = 2\n[transforms.ghost]\nmaterialize = true\n[transforms.real]\nsql = \"SELECT 1\"\n[[sources]]\nname = \"a\"\nstore = 1\nstore_id = 1\n",
            &[("real.sql", "SELECT 1")],
        );
        let problems: Vec<String> = Folder::load(&dir)
            .unwrap_err()
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect();
        assert_eq!(
            problems,
            [
                "6: transforms.real.sql: a transform's sql comes from its file real.sql",
                "3: [transforms.ghost] has no file ghost.sql in the folder",
                "1: target_store and target_store_id both name the store: keep one",
                "9: sources[0].store and sources[0].store_id both name the store: keep one",
            ]
        );
        let (_t, dir) = folder("name = \"x\"\noptions = {", &[]);
        let problems = Folder::load(&dir).unwrap_err();
        assert_eq!(problems[0].line, 2, "{problems:?}");
        assert!(problems[0].message.starts_with("TOML: "), "{problems:?}");
        let missing = Folder::load(&dir.join("nope")).unwrap_err();
        assert!(missing[0].message.contains("cannot read the manifest"));
    }
}
