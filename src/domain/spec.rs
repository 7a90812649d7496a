//! Flow-input specs: the request as received (`*Request`, permissive types so that value
//! problems become 422s with a path) and the validated form that is stored and run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /flow-inputs` as received.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowInputRequest {
    pub name: String,
    pub source_store_ids: Vec<i64>,
    pub target_store_id: i64,
    #[serde(default)]
    pub sources: Vec<SourceRequest>,
    #[serde(default)]
    pub transforms: Vec<Transform>,
    #[serde(default)]
    pub outputs: Option<Vec<OutputRequest>>,
    #[serde(default)]
    pub options: OptionsRequest,
    /// Data tests on nodes' results that gate publishing (see `domain::checks`).
    #[serde(default)]
    pub checks: Vec<super::checks::CheckRequest>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    pub name: String,
    pub store_id: i64,
    pub table: Option<String>,
    pub query: Option<String>,
    pub path: Option<String>,
    pub csv: Option<CsvOptionsRequest>,
    /// Read only what changed since the last completed flow of the input.
    pub incremental: Option<IncrementalRequest>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalRequest {
    /// The column whose growth marks new and changed rows (integer, decimal, date or
    /// timestamp) of a database table or query.
    pub cursor: Option<String>,
    /// `true`: a file source (a glob) reads only the files that no completed flow of the input
    /// has read (by path, size and modification time).
    pub new_files: Option<bool>,
}

/// How a source reads only what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incremental {
    /// Rows whose value in this column is at least the mark (see `domain::cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Only the files no completed flow of the input has read (see `domain::cursor::FileMark`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_files: bool,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptionsRequest {
    pub delimiter: Option<String>,
    pub has_header: Option<bool>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub null_values: Option<Vec<String>>,
    pub infer_rows: Option<usize>,
    /// Column name → type, overriding inference (`int`, `decimal(10,2)`, `date`, ...).
    pub columns: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    pub name: String,
    pub sql: String,
    /// `true`: checkpoint the result even if one node reads it (a restarted or retried flow
    /// resumes from it); `false`: never checkpoint it, each reader computes it. Absent: Sluice
    /// decides (see `domain::plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materialize: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    pub node: String,
    pub table: Option<String>,
    pub mode: Option<String>,
    /// The columns that identify a row of a `merge` output.
    pub unique_key: Option<Vec<String>>,
    /// The contract: the result's columns, types and nullability, checked before staging.
    pub columns: Option<Vec<ColumnContractRequest>>,
}

/// One declared column of an output, as received.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnContractRequest {
    pub name: String,
    /// A type named as in docs/types.md: `bigint`, `integer`, `double`, `decimal(p,s)`,
    /// `text`, `boolean`, `date`, `timestamp`, `timestamptz`, ...
    #[serde(rename = "type")]
    pub column_type: String,
    /// `false`: a NULL in this column fails the output (default `true`).
    pub nullable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsRequest {
    pub max_parallel_tasks: Option<u32>,
    pub fail_fast: Option<bool>,
    pub task_timeout_s: Option<u64>,
    pub flow_timeout_s: Option<u64>,
    pub max_attempts: Option<u32>,
    pub memory_limit_mb: Option<u64>,
}

/// A validated flow input: what is stored, returned and run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowInputSpec {
    pub name: String,
    pub source_store_ids: Vec<i64>,
    pub target_store_id: i64,
    pub sources: Vec<Source>,
    pub transforms: Vec<Transform>,
    pub outputs: Vec<Output>,
    pub options: FlowOptions,
    pub checks: Vec<super::checks::Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    pub name: String,
    pub store_id: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub csv: Option<CsvOptions>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub incremental: Option<Incremental>,
    /// Set while a `new_files` source is read: the files to read instead of the whole glob.
    #[serde(skip)]
    #[schema(ignore)]
    pub only_files: Option<Vec<std::path::PathBuf>>,
}

impl FlowInputSpec {
    /// The incremental sources and their cursor columns (`""` for a `new_files` source).
    pub fn cursor_sources(&self) -> impl Iterator<Item = (&Source, &str)> {
        self.sources.iter().filter_map(|s| {
            s.incremental
                .as_ref()
                .map(|i| (s, i.cursor.as_deref().unwrap_or("")))
        })
    }

    /// Whether two flows of this input must not run at once.
    pub fn is_incremental(&self) -> bool {
        self.cursor_sources().next().is_some()
    }
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceRead<'a> {
    Table(&'a str),
    Query(&'a str),
    /// A path relative to the store's path (globs allowed); `None` reads the store's path itself.
    Path(Option<&'a str>),
}

impl Source {
    pub fn read(&self) -> SourceRead<'_> {
        match (&self.table, &self.query) {
            (Some(t), _) => SourceRead::Table(t),
            (None, Some(q)) => SourceRead::Query(q),
            _ => SourceRead::Path(self.path.as_deref()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CsvOptions {
    pub delimiter: String,
    pub has_header: bool,
    pub quote: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub escape: Option<String>,
    pub null_values: Vec<String>,
    pub infer_rows: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub columns: BTreeMap<String, String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ",".into(),
            has_header: true,
            quote: "\"".into(),
            escape: None,
            null_values: vec!["".into()],
            infer_rows: 1000,
            columns: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Readers see the old table or the new one, never a half-written one.
    Replace,
    /// New rows are added in one transaction (or one rename).
    Append,
    /// Rows whose `unique_key` is in the target replace those rows, the others are added;
    /// nothing else changes. Atomic like the other modes.
    Merge,
}

impl WriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Replace => "replace",
            WriteMode::Append => "append",
            WriteMode::Merge => "merge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Output {
    pub node: String,
    pub table: String,
    pub mode: WriteMode,
    /// The key of a `merge` output (at least one column; absent for the other modes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unique_key: Option<Vec<String>>,
    /// The output's contract (empty: none); see `engine::contract`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnContract>,
}

/// One declared column of an output: the result must have it, of this type, and without
/// NULLs unless `nullable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ColumnContract {
    pub name: String,
    /// As declared (`bigint`, `decimal(12,2)`, ...).
    #[serde(rename = "type")]
    pub column_type: String,
    pub nullable: bool,
}

impl Output {
    /// The name of the persist node in the DAG.
    pub fn node_name(&self) -> String {
        format!("{}->{}", self.node, self.table)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowOptions {
    pub max_parallel_tasks: u32,
    pub fail_fast: bool,
    pub task_timeout_s: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_timeout_s: Option<u64>,
    pub max_attempts: u32,
    pub memory_limit_mb: u64,
}

/// A column type a user may name in `csv.columns`, mapped to Arrow.
pub fn parse_column_type(text: &str) -> Result<datafusion::arrow::datatypes::DataType, String> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let t = text.trim().to_ascii_lowercase();
    let simple = match t.as_str() {
        "int" | "integer" | "bigint" | "int64" | "long" => Some(DataType::Int64),
        "int32" | "smallint" | "int4" => Some(DataType::Int32),
        "double" | "float" | "float64" | "real" | "double precision" => Some(DataType::Float64),
        "float32" => Some(DataType::Float32),
        "text" | "string" | "utf8" | "varchar" => Some(DataType::Utf8),
        "bool" | "boolean" => Some(DataType::Boolean),
        "date" => Some(DataType::Date32),
        "timestamp" | "datetime" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        "timestamptz" => Some(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
        _ => None,
    };
    if let Some(dt) = simple {
        return Ok(dt);
    }
    let decimal = t
        .strip_prefix("decimal")
        .or_else(|| t.strip_prefix("numeric"))
        .and_then(|rest| rest.trim().strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| {
            let (p, s) = args.split_once(',').unwrap_or((args, "0"));
            Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?))
        });
    match decimal {
        Some((p, s)) if (1..=38).contains(&p) && s >= 0 && (s as u8) <= p => {
            Ok(DataType::Decimal128(p, s))
        }
        Some(_) => Err(format!("{text:?}: decimal precision must be 1-38 and scale 0..precision")),
        None => Err(format!(
            "unknown column type {text:?}: use int, int32, double, float32, text, bool, date, timestamp, timestamptz or decimal(p,s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn column_types() {
        assert_eq!(parse_column_type("INT").unwrap(), DataType::Int64);
        assert_eq!(
            parse_column_type("decimal(10, 2)").unwrap(),
            DataType::Decimal128(10, 2)
        );
        assert!(parse_column_type("decimal(50,2)").is_err());
        assert!(parse_column_type("money")
            .unwrap_err()
            .contains("unknown column type"));
    }
}
