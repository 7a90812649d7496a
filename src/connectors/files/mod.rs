//! File connectors: CSV and Parquet files (a glob under a `file` store's path), Parquet datasets
//! (a `columnar_db` store: one directory or file per table), and their atomic sinks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::fsutil::{StagedDir, StagedFile, STAGING_PREFIX};
use super::mapped::{MapBatch, MapError, MappedTable};
use super::{
    store_path, ConnectorError, IoContext, Load, Opened, RowsCallback, SinkConnector, SourceConnector,
    SourceTable,
};
use crate::domain::paths::check_inside;
use crate::domain::spec::{parse_column_type, CsvOptions, Source, SourceRead, WriteMode};
use crate::domain::store::DataStore;

/// Parquet writer settings for targets and checkpoints. The writer holds a whole row group in
/// memory before it flushes: 128k rows keeps that bounded (flat memory for any row count) while
/// row groups stay large enough to scan fast.
pub fn parquet_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// Expands `pattern` (relative to `root`, `None` = the root itself) into the files it names,
/// sorted, each checked to lie inside `root` after resolving symlinks.
pub fn resolve_files(root: &Path, pattern: Option<&str>) -> Result<Vec<PathBuf>, ConnectorError> {
    let files = matching_files(root, pattern)?;
    if files.is_empty() {
        return Err(ConnectorError::permanent(format!(
            "no file matches {:?} in {}",
            pattern.unwrap_or_default(),
            root.display()
        )));
    }
    Ok(files)
}

/// Like `resolve_files`, but a glob that names no file gives none (not an error).
pub fn matching_files(root: &Path, pattern: Option<&str>) -> Result<Vec<PathBuf>, ConnectorError> {
    let Some(pattern) = pattern else {
        return if root.is_file() {
            Ok(vec![root.to_path_buf()])
        } else {
            Err(ConnectorError::permanent(format!(
                "{} is a directory: give the source a path (a file name or a glob such as *.csv)",
                root.display()
            )))
        };
    };
    let full = root.join(pattern);
    let full_text = full.to_string_lossy();
    let mut files = Vec::new();
    let entries = glob::glob(&full_text)
        .map_err(|e| ConnectorError::permanent(format!("path {pattern:?} is not a valid glob: {e}")))?;
    for entry in entries {
        let path = entry.map_err(|e| {
            ConnectorError::permanent(format!("cannot read {}: {}", e.path().display(), e.error()))
        })?;
        if path.is_dir() || is_hidden(&path) {
            continue;
        }
        files.push(check_inside(&path, root).map_err(ConnectorError::permanent)?);
    }
    files.sort();
    Ok(files)
}

/// The files `source` reads: those a `new_files` read picked, or all that `pattern` names.
fn source_files(root: &Path, source: &Source, pattern: Option<&str>) -> Result<Vec<PathBuf>, ConnectorError> {
    match &source.only_files {
        Some(files) => Ok(files.clone()),
        None => resolve_files(root, pattern),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn urls(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.to_string_lossy().into_owned()).collect()
}

fn df_error(context: &str, e: DataFusionError) -> ConnectorError {
    ConnectorError::permanent(format!("{context}: {}", super::error::clean_message(&e)))
}

/// Wraps a DataFusion stream so its errors become connector errors that name the source.
fn checked_stream(stream: SendableRecordBatchStream, label: String) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let mapped = stream.map(move |r| {
        r.map_err(|e| {
            DataFusionError::External(Box::new(ConnectorError::permanent(format!(
                "{label}: {}",
                super::error::clean_message(&e)
            ))))
        })
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, mapped))
}

// ---------------------------------------------------------------------------------------------
// CSV

pub struct CsvSource {
    root: PathBuf,
}

impl CsvSource {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(CsvSource {
            root: store_path(store)?,
        })
    }
}

/// DataFusion read options for these CSV options (and an explicit schema, if any).
fn csv_read_options<'a>(o: &CsvOptions, schema: Option<&'a Schema>) -> CsvReadOptions<'a> {
    let mut opts = CsvReadOptions::new()
        .has_header(o.has_header)
        .delimiter(o.delimiter.as_bytes()[0])
        .quote(o.quote.as_bytes()[0])
        .schema_infer_max_records(o.infer_rows)
        .file_extension("")
        .newlines_in_values(true);
    if let Some(e) = &o.escape {
        opts = opts.escape(e.as_bytes()[0]);
    }
    if let Some(regex) = null_regex(&o.null_values) {
        opts = opts.null_regex(Some(regex));
    }
    if let Some(schema) = schema {
        opts = opts.schema(schema);
    }
    opts
}

fn null_regex(values: &[String]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
    Some(format!("^(?:{})$", alternatives.join("|")))
}

/// The inferred schema with the user's per-column types applied.
fn apply_overrides(inferred: &Schema, o: &CsvOptions) -> Result<Schema, ConnectorError> {
    let mut fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    for (name, ty) in &o.columns {
        let dt = parse_column_type(ty).map_err(ConnectorError::permanent)?;
        match fields.iter_mut().find(|f| f.name() == name) {
            Some(f) => *f = Field::new(name, dt, true),
            None => {
                let known: Vec<&str> = inferred.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(ConnectorError::permanent(format!(
                    "csv.columns names column {name:?}, which the file does not have (columns: {})",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(Schema::new(fields))
}

/// Estimated rows: the files' total size divided by the mean line length of a sample.
fn estimate_csv_rows(files: &[PathBuf], has_header: bool) -> Option<u64> {
    use std::io::Read;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut sample = vec![0u8; 256 * 1024];
    let n = std::fs::File::open(files.first()?).ok()?.read(&mut sample).ok()?;
    let lines = sample[..n].iter().filter(|b| **b == b'\n').count() as u64;
    if lines == 0 {
        return Some(u64::from(!has_header));
    }
    let per_line = n as u64 / lines;
    let estimate = total / per_line.max(1);
    Some(estimate.saturating_sub(if has_header { files.len() as u64 } else { 0 }))
}

#[async_trait]
impl SourceConnector for CsvSource {
    async fn table(&self, source: &Source, ctx: &IoContext) -> Result<Option<SourceTable>, ConnectorError> {
        self.csv_table(source, ctx).await.map(Some)
    }

    async fn open(&self, source: &Source, ctx: &IoContext) -> Result<Opened, ConnectorError> {
        let SourceRead::Path(pattern) = source.read() else {
            return Err(ConnectorError::permanent("a csv store is read by path"));
        };
        let o = source.csv.clone().unwrap_or_default();
        let files = source_files(&self.root, source, pattern)?;
        let inferred = ctx
            .session
            .read_csv(urls(&files), csv_read_options(&o, None))
            .await
            .map_err(|e| csv_error(e, &files, &o, None))?;
        let schema = apply_overrides(inferred.schema().as_arrow(), &o)?;
        let null_values = non_empty_null_values(&o)?;
        // With null values beyond "", read every column as text and type it ourselves (see
        // `non_empty_null_values`); otherwise DataFusion parses the types directly.
        let read_schema = match null_values {
            Some(_) => text_schema(&schema),
            None => schema.clone(),
        };
        let df = ctx
            .session
            .read_csv(urls(&files), csv_read_options(&o, Some(&read_schema)))
            .await
            .map_err(|e| csv_error(e, &files, &o, Some(&schema)))?;
        let stream = df
            .execute_stream()
            .await
            .map_err(|e| csv_error(e, &files, &o, Some(&schema)))?;
        let estimated_rows = estimate_csv_rows(&files, o.has_header);
        let checked = csv_checked_stream(stream, files.clone(), o.clone(), schema.clone());
        let stream = match null_values {
            Some(regex) => typed_stream(checked, regex, files, o, schema),
            None => checked,
        };
        Ok(Opened {
            stream,
            estimated_rows,
        })
    }
}

impl CsvSource {
    /// The files as a table: DataFusion's reader (in parallel byte ranges when no quoted field
    /// spans lines), then the same typing and error location as `open`.
    async fn csv_table(&self, source: &Source, ctx: &IoContext) -> Result<SourceTable, ConnectorError> {
        let SourceRead::Path(pattern) = source.read() else {
            return Err(ConnectorError::permanent("a csv store is read by path"));
        };
        let o = source.csv.clone().unwrap_or_default();
        let files = source_files(&self.root, source, pattern)?;
        let inferred = ctx
            .session
            .read_csv(urls(&files), csv_read_options(&o, None))
            .await
            .map_err(|e| csv_error(e, &files, &o, None))?;
        let schema = apply_overrides(inferred.schema().as_arrow(), &o)?;
        let null_values = non_empty_null_values(&o)?;
        let read_schema = match null_values {
            Some(_) => text_schema(&schema),
            None => schema.clone(),
        };
        let (scan_files, scan_options) = (files.clone(), o.clone());
        let (estimated_rows, estimated_bytes, splittable) = tokio::task::spawn_blocking(move || {
            let estimate = estimate_csv_rows(&scan_files, scan_options.has_header);
            let bytes: u64 = scan_files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            let splittable = scan_files
                .iter()
                .all(|f| !has_quoted_line_break(f, &scan_options).unwrap_or(true));
            (estimate, Some(bytes), splittable)
        })
        .await
        .map_err(|e| ConnectorError::permanent(format!("reading csv: {e}")))?;
        let df = ctx
            .session
            .read_csv(
                urls(&files),
                csv_read_options(&o, Some(&read_schema)).newlines_in_values(!splittable),
            )
            .await
            .map_err(|e| csv_error(e, &files, &o, Some(&schema)))?;
        let schema = Arc::new(schema);
        let map_batch: MapBatch = match null_values {
            Some(nulls) => {
                let (files, o, full) = (files.clone(), o.clone(), Arc::clone(&schema));
                Arc::new(move |batch: RecordBatch, out: &SchemaRef| {
                    type_batch(&batch, &nulls, out).map_err(|cast_error| {
                        let message = locate_csv_error(&files, &o, Some(&full))
                            .unwrap_or_else(|| format!("reading csv: {cast_error}"));
                        DataFusionError::External(Box::new(ConnectorError::permanent(message)))
                    })
                })
            }
            None => Arc::new(|batch: RecordBatch, _: &SchemaRef| Ok(batch)),
        };
        let full = Arc::clone(&schema);
        let map_error: MapError = Arc::new(move |e: DataFusionError| {
            if super::error::find_connector_error(&e).is_some() {
                return e;
            }
            DataFusionError::External(Box::new(csv_error(e, &files, &o, Some(&full))))
        });
        Ok(SourceTable {
            table: Arc::new(MappedTable {
                inner: df.into_view(),
                schema,
                map_batch,
                map_error,
            }),
            estimated_rows,
            estimated_bytes,
        })
    }
}

/// Whether a CSV file has a line break inside a quoted field. DataFusion reads a file in
/// parallel byte ranges that start after line breaks, which is only right when every line
/// break ends a record. With an escape character other than the quote the answer is assumed
/// to be yes.
fn has_quoted_line_break(path: &Path, o: &CsvOptions) -> std::io::Result<bool> {
    use std::io::Read;
    let quote = o.quote.as_bytes()[0];
    if o.escape.as_ref().is_some_and(|e| e.as_bytes()[0] != quote) {
        return Ok(true);
    }
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut in_quote = false;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        let chunk = &buf[..n];
        let mut from = 0;
        for q in memchr::memchr_iter(quote, chunk) {
            if in_quote && memchr::memchr2(b'\n', b'\r', &chunk[from..q]).is_some() {
                return Ok(true);
            }
            in_quote = !in_quote;
            from = q + 1;
        }
        if in_quote && memchr::memchr2(b'\n', b'\r', &chunk[from..]).is_some() {
            return Ok(true);
        }
    }
}

/// The user's null values as a regex, when they name anything besides the empty string.
///
/// DataFusion 55 applies a CSV `null_regex` when it infers the schema but not when it reads the
/// rows (apache/datafusion#25213): a matching value comes back as text, and in a typed column
/// it fails the read. So such sources are read as text and typed by `typed_stream`.
fn non_empty_null_values(o: &CsvOptions) -> Result<Option<regex::Regex>, ConnectorError> {
    if o.null_values.iter().all(|v| v.is_empty()) {
        return Ok(None);
    }
    let Some(pattern) = null_regex(&o.null_values) else {
        return Ok(None);
    };
    regex::Regex::new(&pattern)
        .map(Some)
        .map_err(|e| ConnectorError::permanent(format!("csv.null_values: {e}")))
}

/// `schema` with every column read as nullable text.
fn text_schema(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    )
}

/// Turns batches of text columns into `schema`'s types: values matching `nulls` become null,
/// the rest are cast. A value that does not fit its type is located (file and line) like a
/// parse error of the typed reader.
fn typed_stream(
    text: SendableRecordBatchStream,
    nulls: regex::Regex,
    files: Vec<PathBuf>,
    o: CsvOptions,
    schema: Schema,
) -> SendableRecordBatchStream {
    let schema: SchemaRef = Arc::new(schema);
    let out_schema = Arc::clone(&schema);
    let mapped = text.map(move |batch| {
        let batch = batch?;
        type_batch(&batch, &nulls, &schema).map_err(|cast_error| {
            let message = locate_csv_error(&files, &o, Some(&schema))
                .unwrap_or_else(|| format!("reading csv: {cast_error}"));
            DataFusionError::External(Box::new(ConnectorError::permanent(message)))
        })
    });
    Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped))
}

fn type_batch(batch: &RecordBatch, nulls: &regex::Regex, schema: &SchemaRef) -> Result<RecordBatch, String> {
    use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
    use datafusion::arrow::compute::{cast, cast_with_options, CastOptions};
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(schema.fields()) {
        let text = if column.data_type() == &DataType::Utf8 {
            Arc::clone(column)
        } else {
            cast(column, &DataType::Utf8).map_err(|e| format!("column {}: {e}", field.name()))?
        };
        let nulled: StringArray = text
            .as_string::<i32>()
            .iter()
            .map(|v| v.filter(|s| !nulls.is_match(s)))
            .collect();
        let typed: ArrayRef = if field.data_type() == &DataType::Utf8 {
            Arc::new(nulled)
        } else {
            let strict = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(&nulled, field.data_type(), &strict)
                .map_err(|e| format!("column {}: {e}", field.name()))?
        };
        columns.push(typed);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

/// Like `checked_stream`, but a CSV parse error is located precisely (file and line) by
/// re-reading the files sequentially: DataFusion scans byte ranges in parallel, so its own
/// line numbers are relative to a range and it does not name the file.
fn csv_checked_stream(
    stream: SendableRecordBatchStream,
    files: Vec<PathBuf>,
    o: CsvOptions,
    schema: Schema,
) -> SendableRecordBatchStream {
    let out_schema = stream.schema();
    let mapped =
        stream.then(move |r| {
            let (files, o, schema) = (files.clone(), o.clone(), schema.clone());
            async move {
                r.map_err(|e| DataFusionError::External(Box::new(csv_error(e, &files, &o, Some(&schema)))))
            }
        });
    Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped))
}

fn csv_error(
    e: DataFusionError,
    files: &[PathBuf],
    o: &CsvOptions,
    schema: Option<&Schema>,
) -> ConnectorError {
    let text = super::error::clean_message(&e);
    let looks_like_parse_error =
        text.contains("line") || text.contains("CSV") || text.contains("Csv") || text.contains("parsing");
    if looks_like_parse_error {
        if let Some(located) = locate_csv_error(files, o, schema) {
            return ConnectorError::permanent(located);
        }
    }
    ConnectorError::permanent(format!("reading csv: {text}"))
}

/// Reads `files` one by one with the same options until one fails; says which file and line.
fn locate_csv_error(files: &[PathBuf], o: &CsvOptions, schema: Option<&Schema>) -> Option<String> {
    use datafusion::arrow::csv::reader::{Format, ReaderBuilder};
    for file in files {
        let open = || std::fs::File::open(file).ok();
        let schema = match schema {
            Some(s) => s.clone(),
            None => {
                let mut format = Format::default()
                    .with_header(o.has_header)
                    .with_delimiter(o.delimiter.as_bytes()[0])
                    .with_quote(o.quote.as_bytes()[0]);
                if let Some(re) = null_regex(&o.null_values).and_then(|r| regex::Regex::new(&r).ok()) {
                    format = format.with_null_regex(re);
                }
                match format.infer_schema(open()?, Some(o.infer_rows)) {
                    Ok((s, _)) => s,
                    Err(e) => {
                        let text = strip_arrow_prefix(&e.to_string());
                        let line = text
                            .rsplit_once(" at line ")
                            .and_then(|(_, l)| l.trim().parse::<usize>().ok());
                        return Some(match line {
                            Some(line) => {
                                format!("{} line {line}: {}", file.display(), describe_csv_problem(&text))
                            }
                            None => format!("{}: {}", file.display(), describe_csv_problem(&text)),
                        });
                    }
                }
            }
        };
        let mut builder = ReaderBuilder::new(Arc::new(schema))
            .with_header(o.has_header)
            .with_delimiter(o.delimiter.as_bytes()[0])
            .with_quote(o.quote.as_bytes()[0])
            .with_batch_size(1);
        if let Some(e) = &o.escape {
            builder = builder.with_escape(e.as_bytes()[0]);
        }
        if let Some(re) = null_regex(&o.null_values).and_then(|r| regex::Regex::new(&r).ok()) {
            builder = builder.with_null_regex(re);
        }
        let reader = builder.build(open()?).ok()?;
        for (record, batch) in reader.enumerate() {
            if let Err(e) = batch {
                // Batches of one record: the record number gives the line (when no quoted field
                // spans lines), counting the header.
                let line = record + 1 + usize::from(o.has_header);
                return Some(format!(
                    "{} line {line}: {}",
                    file.display(),
                    describe_csv_problem(&strip_arrow_prefix(&e.to_string()))
                ));
            }
        }
    }
    None
}

fn strip_arrow_prefix(text: &str) -> String {
    text.trim_start_matches("Csv error: ")
        .trim_start_matches("Parser error: ")
        .to_string()
}

/// Rewords arrow-csv messages whose line numbers count from another origin than ours.
fn describe_csv_problem(text: &str) -> String {
    // "Encountered unequal lengths between records on CSV file. Expected 2 records, found 3 records at line 3"
    if let Some(rest) =
        text.strip_prefix("Encountered unequal lengths between records on CSV file. Expected ")
    {
        let expected: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let found: String = rest
            .split("found ")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return format!("wrong number of fields (expected {expected}, found {found})");
    }
    if let Some(rest) = text.strip_prefix("incorrect number of fields for line ") {
        if let Some((_, counts)) = rest.split_once(", ") {
            return format!("wrong number of fields ({counts})");
        }
    }
    if let Some(at) = text.find(" at line ") {
        // "Error while parsing value 'x' as type 'Int64' for column 2 at line 3. Row data: ..."
        let head = &text[..at];
        return head.replace("Error while parsing value", "cannot parse value");
    }
    text.to_string()
}

pub struct CsvFileSink {
    root: PathBuf,
}

impl CsvFileSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(CsvFileSink {
            root: store_path(store)?,
        })
    }
}

/// Where a load is staged in a file store: a hidden file beside its target.
fn staged_file(root: &Path, load: &Load, extension: &str) -> PathBuf {
    root.join(format!("{STAGING_PREFIX}{}.{extension}", load.key))
}

/// Publishes staged files by renaming each over its target (each rename is atomic; files of one
/// flow are published one after the other, right after the flow succeeded).
fn publish_files(root: &Path, loads: &[Load], extension: &str) -> Result<(), ConnectorError> {
    for load in loads {
        let staged = staged_file(root, load, extension);
        if !staged.exists() {
            continue; // published already
        }
        let dest = root.join(format!("{}.{extension}", load.table));
        std::fs::rename(&staged, &dest)
            .map_err(|e| ConnectorError::permanent(format!("publishing {}: {e}", dest.display())))?;
    }
    super::fsutil::sync_dir(Some(root));
    Ok(())
}

fn discard_files(root: &Path, loads: &[Load], extension: &str) -> Result<(), ConnectorError> {
    for load in loads {
        let staged = staged_file(root, load, extension);
        match std::fs::remove_file(&staged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConnectorError::permanent(format!(
                    "removing {}: {e}",
                    staged.display()
                )))
            }
        }
    }
    Ok(())
}

#[async_trait]
impl SinkConnector for CsvFileSink {
    /// Stages the whole new file: for `append`, the current file's rows then the new ones, so
    /// publishing is one rename.
    async fn stage(
        &self,
        load: &Load,
        input: SendableRecordBatchStream,
        ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let dest = self.root.join(format!("{}.csv", load.table));
        let io = |e: std::io::Error| ConnectorError::permanent(format!("writing {}: {e}", dest.display()));
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let staged = StagedFile::new(&staged_file(&self.root, load, "csv")).map_err(io)?;
        if load.mode == WriteMode::Merge && dest.exists() {
            // The result first (its own file), then the old rows whose key it does not have
            // and the result's rows, into the staged file. Both are read back as text: the
            // keys compare as they are written.
            let schema = input.schema();
            check_csv_header(&dest, &schema)?;
            let new = RemoveOnDrop(merge_input_file(&self.root, load, "csv"));
            let rows = write_csv(&new.0, input, false, &on_rows).await?;
            let text = Arc::new(text_schema(&schema));
            let read = |path: &Path| {
                let text = Arc::clone(&text);
                let path = path.to_string_lossy().into_owned();
                let session = ctx.session.clone();
                async move {
                    let options = CsvReadOptions::new()
                        .has_header(true)
                        .schema(&text)
                        .newlines_in_values(true);
                    session.read_csv(path, options).await
                }
            };
            let old = read(&dest)
                .await
                .map_err(|e| df_error("reading the existing file", e))?;
            let result = read(&new.0)
                .await
                .map_err(|e| df_error("reading the staged rows", e))?;
            let merged = merge_frames(old, result, &load.unique_key)
                .map_err(|e| df_error("merging", e))?
                .execute_stream()
                .await
                .map_err(|e| df_error("merging", e))?;
            let no_progress: RowsCallback = Arc::new(|_, _| {});
            write_csv(staged.path(), merged, false, &no_progress).await?;
            staged.commit().map_err(io)?;
            return Ok(rows);
        }
        let append_to_existing = load.mode == WriteMode::Append && dest.exists();
        if append_to_existing {
            check_csv_header(&dest, &input.schema())?;
            tokio::fs::copy(&dest, staged.path()).await.map_err(io)?;
        }
        let rows = write_csv(staged.path(), input, append_to_existing, &on_rows).await?;
        staged.commit().map_err(io)?;
        Ok(rows)
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        publish_files(&self.root, loads, "csv")?;
        Ok(Vec::new())
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        discard_files(&self.root, loads, "csv")
    }
}

/// Where a merge writes the result before merging it with the target's rows: beside the
/// staged file, hidden, with the extension readers look for.
fn merge_input_file(root: &Path, load: &Load, extension: &str) -> PathBuf {
    root.join(format!("{STAGING_PREFIX}{}-new.{extension}", load.key))
}

/// A temporary file, removed when this goes out of scope.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The rows of a merge: those of `old` whose key (`keys`, columns of both) is not in `new`,
/// then every row of `new`. The two have the same columns in the same order.
fn merge_frames(old: DataFrame, new: DataFrame, keys: &[String]) -> Result<DataFrame, DataFusionError> {
    use datafusion::common::{Column, JoinType};
    use datafusion::logical_expr::Expr;
    const OLD: &str = "_sluice_old";
    const NEW: &str = "_sluice_new";
    let old = old.alias(OLD)?;
    let new = new.alias(NEW)?;
    let column = |table: &str, name: &str| Expr::Column(Column::new(Some(table), name));
    let new_keys = new
        .clone()
        .select(keys.iter().map(|k| column(NEW, k)).collect::<Vec<_>>())?;
    let on: Vec<Expr> = keys.iter().map(|k| column(OLD, k).eq(column(NEW, k))).collect();
    old.join_on(new_keys, JoinType::LeftAnti, on)?.union(new)
}

/// Writes `input` as CSV to `path`: a header line first unless `appending` to a file that has
/// one. Batches are encoded on several threads at once and written in their order. Returns
/// the rows written.
async fn write_csv(
    path: &Path,
    input: SendableRecordBatchStream,
    appending: bool,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let io = |e: std::io::Error| ConnectorError::permanent(format!("writing {}: {e}", path.display()));
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .await
        .map_err(io)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    if !appending {
        // The header, even when there are no rows, so the file has its columns.
        let schema = input.schema();
        let names: Vec<String> = schema.fields().iter().map(|f| csv_field(f.name())).collect();
        file.write_all(format!("{}\n", names.join(",")).as_bytes())
            .await
            .map_err(io)?;
    }
    // Batches are encoded on several threads at once and written in their order.
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut encoded = input
        .map(|batch| {
            tokio::task::spawn(async move {
                let batch = batch
                    .map_err(|e| super::error::to_connector_error(e, "reading rows to write"))?;
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(Vec::with_capacity(batch.get_array_memory_size()));
                w.write(&batch)
                    .map_err(|e| ConnectorError::permanent(format!("encoding csv: {e}")))?;
                Ok::<_, ConnectorError>((batch.num_rows() as u64, w.into_inner()))
            })
        })
        .buffered(parallel);
    let mut rows = 0u64;
    while let Some(done) = encoded.next().await {
        let (n, bytes) = done.map_err(|e| ConnectorError::permanent(format!("encoding csv: {e}")))??;
        file.write_all(&bytes).await.map_err(io)?;
        rows += n;
        on_rows(rows, None);
    }
    file.flush().await.map_err(io)?;
    Ok(rows)
}

/// A CSV header field, quoted when it needs to be.
fn csv_field(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}

fn check_csv_header(dest: &Path, schema: &SchemaRef) -> Result<(), ConnectorError> {
    use std::io::BufRead;
    let f = std::fs::File::open(dest)
        .map_err(|e| ConnectorError::permanent(format!("{}: {e}", dest.display())))?;
    let mut first = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut first)
        .map_err(|e| ConnectorError::permanent(e.to_string()))?;
    let existing: Vec<&str> = first.trim_end().split(',').map(|s| s.trim_matches('"')).collect();
    let new: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if existing != new {
        return Err(ConnectorError::permanent(format!(
            "cannot append to {}: its columns ({}) differ from the result's ({})",
            dest.display(),
            existing.join(", "),
            new.join(", ")
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parquet

/// Rows in Parquet files, from their footers.
fn parquet_rows(files: &[PathBuf]) -> Option<u64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let mut total = 0u64;
    for f in files {
        let reader = SerializedFileReader::new(std::fs::File::open(f).ok()?).ok()?;
        total += reader.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Some(total)
}

async fn open_parquet(files: Vec<PathBuf>, ctx: &IoContext, label: &str) -> Result<Opened, ConnectorError> {
    let df = ctx
        .session
        .read_parquet(urls(&files), ParquetReadOptions::default().file_extension(""))
        .await
        .map_err(|e| df_error(label, e))?;
    let stream = df.execute_stream().await.map_err(|e| df_error(label, e))?;
    let estimated_rows = tokio::task::spawn_blocking(move || parquet_rows(&files))
        .await
        .ok()
        .flatten();
    Ok(Opened {
        stream: checked_stream(stream, label.to_string()),
        estimated_rows,
    })
}

pub struct ParquetFileSource {
    root: PathBuf,
}

impl ParquetFileSource {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(ParquetFileSource {
            root: store_path(store)?,
        })
    }
}

#[async_trait]
impl SourceConnector for ParquetFileSource {
    async fn open(&self, source: &Source, ctx: &IoContext) -> Result<Opened, ConnectorError> {
        let SourceRead::Path(pattern) = source.read() else {
            return Err(ConnectorError::permanent("a parquet file store is read by path"));
        };
        let files = source_files(&self.root, source, pattern)?;
        open_parquet(files, ctx, "reading parquet").await
    }

    async fn table(&self, source: &Source, ctx: &IoContext) -> Result<Option<SourceTable>, ConnectorError> {
        let SourceRead::Path(pattern) = source.read() else {
            return Err(ConnectorError::permanent("a parquet file store is read by path"));
        };
        let files = source_files(&self.root, source, pattern)?;
        parquet_table(files, ctx, "reading parquet").await.map(Some)
    }
}

/// Parquet files as one table DataFusion scans itself (row groups it can skip are skipped).
async fn parquet_table(
    files: Vec<PathBuf>,
    ctx: &IoContext,
    label: &str,
) -> Result<SourceTable, ConnectorError> {
    let df = ctx
        .session
        .read_parquet(urls(&files), ParquetReadOptions::default().file_extension(""))
        .await
        .map_err(|e| df_error(label, e))?;
    let estimated_rows = tokio::task::spawn_blocking(move || parquet_rows(&files))
        .await
        .ok()
        .flatten();
    Ok(SourceTable {
        table: df.into_view(),
        estimated_rows,
        // Parquet files carry their own statistics.
        estimated_bytes: None,
    })
}

/// A `columnar_db` store of engine `parquet`: each table is a directory of Parquet files, or
/// one `<table>.parquet` file.
pub struct ParquetDatasetSource {
    root: PathBuf,
}

impl ParquetDatasetSource {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(ParquetDatasetSource {
            root: store_path(store)?,
        })
    }

    /// The files of one table.
    fn table_files(&self, table: &str) -> Result<Vec<PathBuf>, ConnectorError> {
        let dir = self.root.join(table);
        if dir.is_dir() {
            let files = resolve_files(&dir, Some("*.parquet"))
                .or_else(|_| resolve_files(&dir, Some("**/*.parquet")))
                .map_err(|_| {
                    ConnectorError::permanent(format!(
                        "table {table:?} has no Parquet files in {}",
                        dir.display()
                    ))
                })?;
            return Ok(files);
        }
        let file = self.root.join(format!("{table}.parquet"));
        if file.is_file() {
            return Ok(vec![
                check_inside(&file, &self.root).map_err(ConnectorError::permanent)?
            ]);
        }
        let known = self.tables().unwrap_or_default();
        let hint = crate::domain::names::did_you_mean(table, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        Err(ConnectorError::permanent(format!(
            "table {table:?} does not exist in {}{hint}",
            self.root.display()
        )))
    }

    /// Every table in the store.
    fn tables(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.path().is_dir() {
                out.push(name);
            } else if let Some(stem) = name.strip_suffix(".parquet") {
                out.push(stem.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl SourceConnector for ParquetDatasetSource {
    async fn table(&self, source: &Source, ctx: &IoContext) -> Result<Option<SourceTable>, ConnectorError> {
        match source.read() {
            SourceRead::Table(table) => {
                let files = self.table_files(table)?;
                parquet_table(files, ctx, &format!("reading table {table:?}"))
                    .await
                    .map(Some)
            }
            // A query runs in a session of its own (see `open`).
            _ => Ok(None),
        }
    }

    async fn open(&self, source: &Source, ctx: &IoContext) -> Result<Opened, ConnectorError> {
        match source.read() {
            SourceRead::Table(table) => {
                let files = self.table_files(table)?;
                open_parquet(files, ctx, &format!("reading table {table:?}")).await
            }
            SourceRead::Query(query) => {
                // The store's own dialect is DataFusion's: register every table and run it.
                let session = SessionContext::new_with_state(ctx.session.state());
                let tables = self
                    .tables()
                    .map_err(|e| ConnectorError::permanent(format!("{}: {e}", self.root.display())))?;
                for table in tables {
                    let files = self.table_files(&table)?;
                    session
                        .register_parquet(&table, urls(&files)[0].as_str(), ParquetReadOptions::default())
                        .await
                        .map_err(|e| df_error(&format!("registering table {table:?}"), e))?;
                    if files.len() > 1 {
                        let df = session
                            .read_parquet(urls(&files), ParquetReadOptions::default().file_extension(""))
                            .await
                            .map_err(|e| df_error("reading parquet", e))?;
                        session
                            .deregister_table(&table)
                            .map_err(|e| df_error("registering", e))?;
                        session
                            .register_table(&table, df.into_view())
                            .map_err(|e| df_error("registering", e))?;
                    }
                }
                let options = datafusion::execution::context::SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                let df = session
                    .sql_with_options(query, options)
                    .await
                    .map_err(|e| df_error("query", e))?;
                let stream = df.execute_stream().await.map_err(|e| df_error("query", e))?;
                Ok(Opened {
                    stream: checked_stream(stream, "query".into()),
                    estimated_rows: None,
                })
            }
            SourceRead::Path(_) => Err(ConnectorError::permanent(
                "a columnar store is read by table or query",
            )),
        }
    }
}

/// Writes `input` as one Parquet file at `path`. Returns the rows written.
pub async fn write_parquet_file(
    path: &Path,
    mut input: SendableRecordBatchStream,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let io = |e: std::io::Error| ConnectorError::permanent(format!("writing {}: {e}", path.display()));
    let file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut writer = AsyncArrowWriter::try_new(file, input.schema(), Some(parquet_properties()))
        .map_err(|e| ConnectorError::permanent(format!("writing parquet: {e}")))?;
    let mut rows = 0u64;
    while let Some(batch) = input.next().await {
        let batch =
            batch.map_err(|e| super::error::to_connector_error(e, "reading rows to write"))?;
        rows += batch.num_rows() as u64;
        writer
            .write(&batch)
            .await
            .map_err(|e| ConnectorError::permanent(format!("writing parquet: {e}")))?;
        on_rows(rows, None);
    }
    writer
        .close()
        .await
        .map_err(|e| ConnectorError::permanent(format!("writing parquet: {e}")))?;
    Ok(rows)
}

/// Whether two schemas have the same columns, by name and by kind of type (a string column
/// may be read back as a string view).
fn same_columns(a: &Schema, b: &Schema) -> bool {
    fn kind(t: &DataType) -> DataType {
        match t {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            other => other.clone(),
        }
    }
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && kind(x.data_type()) == kind(y.data_type()))
}

/// The row count DataFusion's writers answer with (one `count` column).
fn count_of(batches: &[RecordBatch]) -> u64 {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::UInt64Type;
    batches
        .iter()
        .filter_map(|b| b.columns().first())
        .filter_map(|c| c.as_primitive_opt::<UInt64Type>())
        .flat_map(|a| (0..a.len()).map(move |i| a.value(i)))
        .sum()
}

pub struct ParquetFileSink {
    root: PathBuf,
}

impl ParquetFileSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(ParquetFileSink {
            root: store_path(store)?,
        })
    }
}

#[async_trait]
impl SinkConnector for ParquetFileSink {
    /// Stages the whole new file (for `append`: the current rows, then the new ones).
    async fn stage(
        &self,
        load: &Load,
        input: SendableRecordBatchStream,
        ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let dest = self.root.join(format!("{}.parquet", load.table));
        let io = |e: std::io::Error| ConnectorError::permanent(format!("{}: {e}", dest.display()));
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let staged = StagedFile::new(&staged_file(&self.root, load, "parquet")).map_err(io)?;
        if load.mode == WriteMode::Merge && dest.exists() {
            let rows = stage_parquet_merge(
                &self.root,
                std::slice::from_ref(&dest),
                staged.path(),
                load,
                input,
                ctx,
                &on_rows,
            )
            .await?;
            staged.commit().map_err(io)?;
            return Ok(rows);
        }
        let input = if load.mode == WriteMode::Append && dest.exists() {
            // One file cannot be appended to in place: old rows then new ones.
            let old = ctx
                .session
                .read_parquet(dest.to_string_lossy().as_ref(), ParquetReadOptions::default())
                .await
                .map_err(|e| df_error("reading the existing file", e))?;
            if old.schema().as_arrow().fields() != input.schema().fields() {
                return Err(ConnectorError::permanent(format!(
                    "cannot append to {}: its columns differ from the result's",
                    dest.display()
                )));
            }
            let old_stream = old
                .execute_stream()
                .await
                .map_err(|e| df_error("reading the existing file", e))?;
            let schema = input.schema();
            Box::pin(RecordBatchStreamAdapter::new(schema, old_stream.chain(input)))
                as SendableRecordBatchStream
        } else {
            input
        };
        let rows = write_parquet_file(staged.path(), input, &on_rows).await?;
        staged.commit().map_err(io)?;
        Ok(rows)
    }

    /// Stages a query's result with DataFusion's Parquet writer, which encodes row groups and
    /// columns on every core (for `append`: the current rows and the new ones).
    async fn stage_frame(
        &self,
        load: &Load,
        input: DataFrame,
        ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        if load.mode == WriteMode::Merge {
            let stream = input
                .execute_stream()
                .await
                .map_err(|e| super::error::to_connector_error(e, "running the query to write"))?;
            return self.stage(load, stream, ctx, on_rows).await;
        }
        let dest = self.root.join(format!("{}.parquet", load.table));
        let io = |e: std::io::Error| ConnectorError::permanent(format!("{}: {e}", dest.display()));
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let staged = StagedFile::new(&staged_file(&self.root, load, "parquet")).map_err(io)?;
        let input = if load.mode == WriteMode::Append && dest.exists() {
            // One file cannot be appended to in place: old rows and new ones.
            let old = ctx
                .session
                .read_parquet(dest.to_string_lossy().as_ref(), ParquetReadOptions::default())
                .await
                .map_err(|e| df_error("reading the existing file", e))?;
            if !same_columns(old.schema().as_arrow(), input.schema().as_arrow()) {
                return Err(ConnectorError::permanent(format!(
                    "cannot append to {}: its columns differ from the result's",
                    dest.display()
                )));
            }
            old.union(input).map_err(|e| df_error("appending", e))?
        } else {
            input
        };
        let schema = Arc::new(input.schema().as_arrow().clone());
        let written = input
            .write_parquet(
                staged.path().to_string_lossy().as_ref(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .map_err(|e| super::error::to_connector_error(e, "writing parquet"))?;
        if !staged.path().exists() {
            // No rows: the file still has its columns.
            let empty = Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::empty()));
            write_parquet_file(staged.path(), empty, &(Arc::new(|_, _| {}) as RowsCallback)).await?;
        }
        staged.commit().map_err(io)?;
        Ok(count_of(&written))
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        publish_files(&self.root, loads, "parquet")?;
        Ok(Vec::new())
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        discard_files(&self.root, loads, "parquet")
    }
}

/// Stages a merge into the existing Parquet files `old` as one file at `staged`: the result is
/// written beside it first, then the old rows whose key the result does not have and the
/// result's rows go into `staged`. Returns the result's rows.
async fn stage_parquet_merge(
    root: &Path,
    old: &[PathBuf],
    staged: &Path,
    load: &Load,
    input: SendableRecordBatchStream,
    ctx: &IoContext,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let new = RemoveOnDrop(merge_input_file(root, load, "parquet"));
    let rows = write_parquet_file(&new.0, input, on_rows).await?;
    let options = || ParquetReadOptions::default().file_extension("");
    let old_rows = ctx
        .session
        .read_parquet(urls(old), options())
        .await
        .map_err(|e| df_error("reading the existing rows", e))?;
    let result = ctx
        .session
        .read_parquet(new.0.to_string_lossy().into_owned(), options())
        .await
        .map_err(|e| df_error("reading the staged rows", e))?;
    if !same_columns(old_rows.schema().as_arrow(), result.schema().as_arrow()) {
        return Err(ConnectorError::permanent(format!(
            "cannot merge into {}: its columns ({}) differ from the result's ({})",
            load.table,
            column_list(old_rows.schema().as_arrow()),
            column_list(result.schema().as_arrow())
        )));
    }
    let merged = merge_frames(old_rows, result, &load.unique_key)
        .map_err(|e| df_error("merging", e))?
        .execute_stream()
        .await
        .map_err(|e| df_error("merging", e))?;
    let no_progress: RowsCallback = Arc::new(|_, _| {});
    write_parquet_file(staged, merged, &no_progress).await?;
    Ok(rows)
}

/// `a bigint, b text` style, for messages.
fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `columnar_db` Parquet store: each table is a directory of Parquet files.
pub struct ParquetDatasetSink {
    root: PathBuf,
}

impl ParquetDatasetSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(ParquetDatasetSink {
            root: store_path(store)?,
        })
    }

    /// A whole staged dataset directory beside the target: for `replace`, and for `append` to
    /// a table that does not exist yet.
    fn staged_dir(&self, load: &Load) -> PathBuf {
        self.root.join(format!("{STAGING_PREFIX}{}", load.key))
    }

    /// The prefix of the part files staged inside an existing target directory (`append`):
    /// `.sluice-stage-<key>-00000.parquet`, ...
    fn staged_part_prefix(load: &Load) -> String {
        format!("{STAGING_PREFIX}{}-", load.key)
    }

    /// The part files an `append` staged inside the target directory, sorted.
    fn staged_parts(&self, load: &Load) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.root.join(&load.table);
        let prefix = Self::staged_part_prefix(load);
        let mut parts = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parts),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".parquet") {
                parts.push(dir.join(name));
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// The name an appended part keeps once published (`part-<key>-00000.parquet`).
    fn published_name(staged: &Path) -> String {
        let name = staged
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("part-{}", name.trim_start_matches(STAGING_PREFIX))
    }

    /// The marker left in a dataset swapped in by a `replace`, so a publish retried after a
    /// crash knows the swap happened (the staged directory then holds the old data).
    fn marker(&self, load: &Load) -> PathBuf {
        self.root
            .join(&load.table)
            .join(format!(".sluice-published-{}", load.key))
    }

    /// Writes a staged dataset directory: one part file per partition (all written at once),
    /// and the marker for `replace`.
    async fn stage_dir(
        &self,
        load: &Load,
        part_prefix: &str,
        partitions: Vec<SendableRecordBatchStream>,
    ) -> Result<u64, ConnectorError> {
        let staged = self.staged_dir(load);
        let err = |e: std::io::Error| ConnectorError::permanent(format!("{}: {e}", staged.display()));
        std::fs::create_dir_all(&self.root).map_err(err)?;
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(err)?;
        }
        let dir = StagedDir::new(&staged).map_err(err)?;
        let rows = write_parts(dir.path(), part_prefix, partitions).await?;
        if matches!(load.mode, WriteMode::Replace | WriteMode::Merge) {
            // The marker travels with the data: once swapped in, it says so.
            std::fs::write(dir.path().join(format!(".sluice-published-{}", load.key)), b"").map_err(err)?;
        }
        dir.commit().map_err(err)?;
        Ok(rows)
    }

    /// A merge into an existing dataset stages the whole merged table (one part file), swapped
    /// in like a `replace`.
    async fn stage_merge(
        &self,
        load: &Load,
        old: &[PathBuf],
        partitions: Vec<SendableRecordBatchStream>,
        ctx: &IoContext,
    ) -> Result<u64, ConnectorError> {
        let staged = self.staged_dir(load);
        let err = |e: std::io::Error| ConnectorError::permanent(format!("{}: {e}", staged.display()));
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(err)?;
        }
        let dir = StagedDir::new(&staged).map_err(err)?;
        let Some(first) = partitions.first() else {
            return Err(ConnectorError::permanent("merging: the result has no partitions"));
        };
        let schema = first.schema();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(partitions).flatten(),
        ));
        let no_progress: RowsCallback = Arc::new(|_, _| {});
        let part = dir.path().join("part-00000.parquet");
        let rows = stage_parquet_merge(&self.root, old, &part, load, input, ctx, &no_progress).await?;
        std::fs::write(dir.path().join(format!(".sluice-published-{}", load.key)), b"").map_err(err)?;
        dir.commit().map_err(err)?;
        Ok(rows)
    }

    async fn stage_partitions(
        &self,
        load: &Load,
        partitions: Vec<SendableRecordBatchStream>,
        ctx: &IoContext,
    ) -> Result<u64, ConnectorError> {
        let dataset = self.root.join(&load.table);
        match load.mode {
            WriteMode::Replace => self.stage_dir(load, "part-", partitions).await,
            WriteMode::Merge => {
                let old = if dataset.is_dir() {
                    resolve_files(&dataset, Some("*.parquet")).unwrap_or_default()
                } else {
                    Vec::new()
                };
                if old.is_empty() {
                    self.stage_dir(load, "part-", partitions).await
                } else {
                    self.stage_merge(load, &old, partitions, ctx).await
                }
            }
            WriteMode::Append if !dataset.is_dir() => {
                let prefix = format!("part-{}-", load.key);
                self.stage_dir(load, &prefix, partitions).await
            }
            WriteMode::Append => {
                let err =
                    |e: std::io::Error| ConnectorError::permanent(format!("{}: {e}", dataset.display()));
                for stale in self.staged_parts(load).map_err(err)? {
                    std::fs::remove_file(stale).map_err(err)?;
                }
                // Written under a temporary directory's names, then renamed to staged parts:
                // a crash mid-write leaves no part that looks staged.
                let temp = StagedDir::new(&self.root.join(format!("{STAGING_PREFIX}{}-parts", load.key)))
                    .map_err(err)?;
                let rows = write_parts(temp.path(), &Self::staged_part_prefix(load), partitions).await?;
                for entry in std::fs::read_dir(temp.path()).map_err(err)? {
                    let entry = entry.map_err(err)?;
                    // Staged means durable.
                    std::fs::File::open(entry.path())
                        .and_then(|f| f.sync_all())
                        .map_err(err)?;
                    std::fs::rename(entry.path(), dataset.join(entry.file_name())).map_err(err)?;
                }
                drop(temp);
                super::fsutil::sync_dir(Some(&dataset));
                Ok(rows)
            }
        }
    }
}

/// Writes each partition into its own Parquet file `<prefix><i>.parquet` in `dir`, all at once;
/// files that got no rows are left out, unless every one did (then one file keeps the columns).
async fn write_parts(
    dir: &Path,
    prefix: &str,
    partitions: Vec<SendableRecordBatchStream>,
) -> Result<u64, ConnectorError> {
    let no_progress: RowsCallback = Arc::new(|_, _| {});
    let mut writers = tokio::task::JoinSet::new();
    for (i, stream) in partitions.into_iter().enumerate() {
        let path = dir.join(format!("{prefix}{i:05}.parquet"));
        let no_progress = Arc::clone(&no_progress);
        writers.spawn(async move {
            let rows = write_parquet_file(&path, stream, &no_progress).await?;
            Ok::<_, ConnectorError>((path, rows))
        });
    }
    let mut files = Vec::new();
    while let Some(done) = writers.join_next().await {
        files.push(done.map_err(|e| ConnectorError::permanent(format!("writing parquet: {e}")))??);
    }
    files.sort();
    let rows: u64 = files.iter().map(|(_, r)| r).sum();
    let empty: Vec<&PathBuf> = files.iter().filter(|(_, r)| *r == 0).map(|(p, _)| p).collect();
    let keep_one = usize::from(empty.len() == files.len());
    for path in empty.into_iter().skip(keep_one) {
        std::fs::remove_file(path)
            .map_err(|e| ConnectorError::permanent(format!("{}: {e}", path.display())))?;
    }
    Ok(rows)
}

fn ignore_missing(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[async_trait]
impl SinkConnector for ParquetDatasetSink {
    async fn stage(
        &self,
        load: &Load,
        input: SendableRecordBatchStream,
        ctx: &IoContext,
        _on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        self.stage_partitions(load, vec![input], ctx).await
    }

    /// One part file per partition of the result, written at once.
    async fn stage_frame(
        &self,
        load: &Load,
        input: DataFrame,
        ctx: &IoContext,
        _on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let partitions = input
            .execute_stream_partitioned()
            .await
            .map_err(|e| super::error::to_connector_error(e, "running the query to write"))?;
        self.stage_partitions(load, partitions, ctx).await
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        for load in loads {
            let dest = self.root.join(&load.table);
            let err =
                |e: std::io::Error| ConnectorError::permanent(format!("publishing {}: {e}", dest.display()));
            let staged_dir = self.staged_dir(load);
            match load.mode {
                WriteMode::Replace | WriteMode::Merge => {
                    if self.marker(load).exists() {
                        // Swapped in before a crash: the staged directory holds the old data.
                        ignore_missing(std::fs::remove_dir_all(&staged_dir)).map_err(err)?;
                    } else if staged_dir.exists() {
                        super::fsutil::replace_dir(&staged_dir, &dest).map_err(err)?;
                    }
                    ignore_missing(std::fs::remove_file(self.marker(load))).map_err(err)?;
                }
                WriteMode::Append => {
                    for part in self.staged_parts(load).map_err(err)? {
                        let name = Self::published_name(&part);
                        std::fs::rename(&part, dest.join(name)).map_err(err)?;
                    }
                    if staged_dir.exists() && !dest.exists() {
                        std::fs::rename(&staged_dir, &dest).map_err(err)?;
                    } else if staged_dir.exists() {
                        // The table appeared since staging: move the parts in.
                        for entry in std::fs::read_dir(&staged_dir).map_err(err)? {
                            let entry = entry.map_err(err)?;
                            std::fs::rename(entry.path(), dest.join(entry.file_name())).map_err(err)?;
                        }
                        std::fs::remove_dir_all(&staged_dir).map_err(err)?;
                    }
                    super::fsutil::sync_dir(Some(&dest));
                }
            }
        }
        super::fsutil::sync_dir(Some(&self.root));
        Ok(Vec::new())
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        for load in loads {
            let staged_dir = self.staged_dir(load);
            let err = |e: std::io::Error| {
                ConnectorError::permanent(format!("removing {}: {e}", staged_dir.display()))
            };
            // A replace already swapped in (marker present) is published: nothing to discard.
            let swapping = matches!(load.mode, WriteMode::Replace | WriteMode::Merge);
            if !(swapping && self.marker(load).exists()) {
                ignore_missing(std::fs::remove_dir_all(&staged_dir)).map_err(err)?;
            }
            if load.mode == WriteMode::Append {
                for part in self.staged_parts(load).map_err(err)? {
                    ignore_missing(std::fs::remove_file(part)).map_err(err)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};

    use super::*;
    use crate::domain::store::{Connection, FileConnection, StoreEngine, StoreKind};

    fn csv_store(dir: &Path) -> DataStore {
        DataStore {
            id: 1,
            created_utc: chrono::Utc::now(),
            name: "raw".into(),
            kind: StoreKind::File,
            engine: StoreEngine::Csv,
            connection: Connection::File(FileConnection {
                path: dir.display().to_string(),
            }),
            password: None,
        }
    }

    fn source(csv: CsvOptions) -> Source {
        Source {
            name: "s".into(),
            store_id: 1,
            table: None,
            query: None,
            path: Some("s.csv".into()),
            csv: Some(csv),
            incremental: None,
            only_files: None,
        }
    }

    async fn read(contents: &str, csv: CsvOptions) -> Result<Vec<RecordBatch>, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("s.csv"), contents).expect("write csv");
        let ctx = IoContext {
            session: SessionContext::new(),
            cancel: Default::default(),
            batch_size: 8192,
            pools: Default::default(),
        };
        let opened = CsvSource::new(&csv_store(dir.path()))
            .map_err(|e| e.message)?
            .open(&source(csv), &ctx)
            .await
            .map_err(|e| e.message)?;
        let batches: Vec<_> = opened.stream.collect().await;
        batches
            .into_iter()
            .map(|b| b.map_err(|e| super::error::clean_message(&e)))
            .collect()
    }

    fn options(null_values: &[&str], columns: &[(&str, &str)]) -> CsvOptions {
        CsvOptions {
            null_values: null_values.iter().map(|v| v.to_string()).collect(),
            columns: columns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..CsvOptions::default()
        }
    }

    #[tokio::test]
    async fn null_values_become_nulls_in_typed_and_text_columns() {
        let batches = read(
            "id,qty,price,note\n1,2,9.50,ok\n2,N/A,N/A,N/A\n3,,1.25,\n4,-1,0.10,n/a\n",
            options(&["", "N/A"], &[("price", "decimal(10,2)")]),
        )
        .await
        .expect("read");
        let batch =
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
        let qty = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(qty.iter().collect::<Vec<_>>(), [Some(2), None, None, Some(-1)]);
        let price = batch.column(2).as_primitive::<Decimal128Type>();
        assert_eq!(price.data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(
            price.iter().collect::<Vec<_>>(),
            [Some(950), None, Some(125), Some(10)]
        );
        // Only whole-field, case-sensitive matches are nulls.
        let note = batch.column(3).as_string::<i32>();
        assert_eq!(
            note.iter().collect::<Vec<_>>(),
            [Some("ok"), None, None, Some("n/a")]
        );
    }

    #[test]
    fn quoted_line_breaks_are_found_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let check = |text: &str, o: &CsvOptions| {
            let path = dir.path().join("t.csv");
            std::fs::write(&path, text).unwrap();
            has_quoted_line_break(&path, o).unwrap()
        };
        let o = CsvOptions::default();
        assert!(!check("a,b\n1,\"x, y\"\n2,\"say \"\"hi\"\"\"\n", &o));
        assert!(check("a,b\n1,\"two\nlines\"\n", &o));
        assert!(check("a,b\n1,\"cr\rinside\"\n", &o));
        // A quoted line break far beyond the first read buffer.
        let mut long = String::from("a\n");
        while long.len() < 5 << 20 {
            long.push_str("\"plain\"\n");
        }
        assert!(!check(&long, &o));
        long.push_str("\"late\nbreak\"\n");
        assert!(check(&long, &o));
        // With a backslash escape, assume the worst.
        let escaped = CsvOptions {
            escape: Some("\\".into()),
            ..CsvOptions::default()
        };
        assert!(check("a\n1\n", &escaped));
    }

    #[tokio::test]
    async fn a_value_that_does_not_fit_its_type_is_located() {
        let err = read(
            "id,qty\n1,2\n2,N/A\n3,lots\n",
            options(&["", "N/A"], &[("qty", "int")]),
        )
        .await
        .expect_err("a bad value");
        assert!(err.contains("s.csv line 4"), "{err}");
        assert!(err.contains("lots"), "{err}");
    }

    fn dataset_store(dir: &Path) -> DataStore {
        DataStore {
            id: 2,
            created_utc: chrono::Utc::now(),
            name: "lake".into(),
            kind: StoreKind::ColumnarDb,
            engine: StoreEngine::Parquet,
            connection: Connection::File(FileConnection {
                path: dir.display().to_string(),
            }),
            password: None,
        }
    }

    fn batch_stream(values: &[i64]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(datafusion::arrow::array::Int64Array::from(
                values.to_vec(),
            ))],
        )
        .expect("batch");
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![Ok(batch)]),
        ))
    }

    async fn dataset_rows(dir: &Path) -> usize {
        let files = resolve_files(dir, Some("*.parquet")).unwrap_or_default();
        parquet_rows(&files).unwrap_or(0) as usize
    }

    #[tokio::test]
    async fn dataset_publish_is_idempotent_and_discard_leaves_nothing() {
        let root = tempfile::tempdir().expect("temp");
        let sink = ParquetDatasetSink::new(&dataset_store(root.path())).expect("sink");
        let ctx = IoContext {
            session: SessionContext::new(),
            cancel: Default::default(),
            batch_size: 8192,
            pools: Default::default(),
        };
        let rows: RowsCallback = Arc::new(|_, _| {});
        let append = |key: &str| Load {
            table: "t".into(),
            mode: WriteMode::Append,
            unique_key: vec![],
            key: key.into(),
        };
        let replace = |key: &str| Load {
            table: "t".into(),
            mode: WriteMode::Replace,
            unique_key: vec![],
            key: key.into(),
        };

        // Append to a table that does not exist yet, publish twice: one copy.
        sink.stage(&append("f1_0"), batch_stream(&[1, 2]), &ctx, rows.clone())
            .await
            .expect("stage");
        assert!(!root.path().join("t").exists(), "staged data is invisible");
        sink.publish(&[append("f1_0")]).await.expect("publish");
        sink.publish(&[append("f1_0")]).await.expect("publish again");
        assert_eq!(dataset_rows(&root.path().join("t")).await, 2);
        // Append to the existing table.
        sink.stage(&append("f2_0"), batch_stream(&[3]), &ctx, rows.clone())
            .await
            .expect("stage");
        sink.publish(&[append("f2_0")]).await.expect("publish");
        sink.publish(&[append("f2_0")]).await.expect("publish again");
        assert_eq!(dataset_rows(&root.path().join("t")).await, 3);
        // Replace, published twice (as after a crash between the swap and the clean-up).
        sink.stage(&replace("f3_0"), batch_stream(&[9]), &ctx, rows.clone())
            .await
            .expect("stage");
        sink.publish(&[replace("f3_0")]).await.expect("publish");
        sink.publish(&[replace("f3_0")]).await.expect("publish again");
        assert_eq!(dataset_rows(&root.path().join("t")).await, 1);
        // Discarded loads leave nothing behind.
        sink.stage(&replace("f4_0"), batch_stream(&[7, 7]), &ctx, rows.clone())
            .await
            .expect("stage");
        sink.stage(&append("f4_1"), batch_stream(&[8]), &ctx, rows.clone())
            .await
            .expect("stage");
        sink.discard(&[replace("f4_0"), append("f4_1")])
            .await
            .expect("discard");
        assert_eq!(dataset_rows(&root.path().join("t")).await, 1);
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["t"]);
        let inside: Vec<String> = std::fs::read_dir(root.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(inside, ["part-00000.parquet"]);
    }
}
