//! The CSV source: DataFusion's reader with the user's options, column types and null values,
//! in parallel byte ranges when no quoted field spans lines.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::CsvReadOptions;
use futures::StreamExt;

use super::csv_location::{csv_checked_stream, csv_error, locate_csv_error};
use super::{source_files, urls};
use crate::connectors::error;
use crate::connectors::mapped::{MapBatch, MapError, MappedTable};
use crate::connectors::{store_path, ConnectorError, IoContext, Opened, SourceConnector, SourceTable};
use crate::domain::spec::{parse_column_type, CsvOptions, Source, SourceRead};
use crate::domain::store::DataStore;

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
pub(super) fn csv_read_options<'a>(o: &CsvOptions, schema: Option<&'a Schema>) -> CsvReadOptions<'a> {
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

pub(super) fn null_regex(values: &[String]) -> Option<String> {
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
        let Prepared {
            o,
            files,
            schema,
            null_values,
            read_schema,
        } = self.prepare(source, ctx).await?;
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

/// What both ways of reading a CSV source start from.
struct Prepared {
    o: CsvOptions,
    files: Vec<PathBuf>,
    /// The columns as inferred, with the user's types.
    schema: Schema,
    /// The user's null values, when they name anything besides "".
    null_values: Option<NullValues>,
    /// The columns the files are read as: with such null values all text, typed by
    /// `type_batch` (see `non_empty_null_values`); otherwise `schema`, parsed by DataFusion.
    read_schema: Schema,
}

impl CsvSource {
    /// The source's files, options and schemas.
    async fn prepare(&self, source: &Source, ctx: &IoContext) -> Result<Prepared, ConnectorError> {
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
        Ok(Prepared {
            o,
            files,
            schema,
            null_values,
            read_schema,
        })
    }

    /// The files as a table: DataFusion's reader (in parallel byte ranges when no quoted field
    /// spans lines), then the same typing and error location as `open`.
    async fn csv_table(&self, source: &Source, ctx: &IoContext) -> Result<SourceTable, ConnectorError> {
        let Prepared {
            o,
            files,
            schema,
            null_values,
            read_schema,
        } = self.prepare(source, ctx).await?;
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
        .map_err(|e| ConnectorError::permanent_from("reading csv", e))?;
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
                    type_batch(&batch, &nulls, out).map_err(|e| typing_failed(e, &files, &o, &full))
                })
            }
            None => Arc::new(|batch: RecordBatch, _: &SchemaRef| Ok(batch)),
        };
        let full = Arc::clone(&schema);
        let map_error: MapError = Arc::new(move |e: DataFusionError| {
            if error::find_connector_error(&e).is_some() {
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

/// The user's null values, when they name anything besides the empty string.
///
/// DataFusion 55 applies a CSV `null_regex` when it infers the schema but not when it reads the
/// rows (apache/datafusion#25213): a matching value comes back as text, and in a typed column
/// it fails the read. So such sources are read as text and typed by `typed_stream`.
fn non_empty_null_values(o: &CsvOptions) -> Result<Option<NullValues>, ConnectorError> {
    if o.null_values.iter().all(|v| v.is_empty()) {
        return Ok(None);
    }
    Ok(Some(NullValues(o.null_values.clone())))
}

/// The user's null values: a field is null when it is one of them, whole and case-sensitive
/// (what `null_regex` says to DataFusion, compared as text: a handful of literals, not a regex
/// per value).
#[derive(Debug, Clone)]
struct NullValues(Vec<String>);

impl NullValues {
    fn matches(&self, field: &str) -> bool {
        self.0.iter().any(|n| n == field)
    }
}

/// `schema` with every column read as nullable text.
pub(super) fn text_schema(schema: &Schema) -> Schema {
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
    nulls: NullValues,
    files: Vec<PathBuf>,
    o: CsvOptions,
    schema: Schema,
) -> SendableRecordBatchStream {
    let schema: SchemaRef = Arc::new(schema);
    let out_schema = Arc::clone(&schema);
    let mapped = text.map(move |batch| {
        let batch = batch?;
        type_batch(&batch, &nulls, &schema).map_err(|e| typing_failed(e, &files, &o, &schema))
    });
    Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped))
}

/// Why a batch read as text could not be given its columns' types.
#[derive(Debug, thiserror::Error)]
enum TypingError {
    #[error("column {column}: {source}")]
    Column {
        column: String,
        #[source]
        source: ArrowError,
    },
    #[error(transparent)]
    Batch(ArrowError),
}

/// A batch `type_batch` refused, as the stream's error: the value located (file and line) like
/// a parse error of the typed reader when the file shows it (`schema` is the source's), else
/// the cast's own words.
fn typing_failed(e: TypingError, files: &[PathBuf], o: &CsvOptions, schema: &Schema) -> DataFusionError {
    let message = locate_csv_error(files, o, Some(schema)).unwrap_or_else(|| format!("reading csv: {e}"));
    DataFusionError::External(Box::new(ConnectorError::permanent(message).caused_by(e)))
}

fn type_batch(
    batch: &RecordBatch,
    nulls: &NullValues,
    schema: &SchemaRef,
) -> Result<RecordBatch, TypingError> {
    let column_error = |field: &Field| {
        let column = field.name().clone();
        move |source| TypingError::Column { column, source }
    };
    use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
    use datafusion::arrow::compute::{cast, cast_with_options, nullif, CastOptions};
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(schema.fields()) {
        let text = if column.data_type() == &DataType::Utf8 {
            Arc::clone(column)
        } else {
            cast(column, &DataType::Utf8).map_err(column_error(field))?
        };
        // The fields that name a null become null; the text itself is shared, not copied.
        let named_null: BooleanArray = text
            .as_string::<i32>()
            .iter()
            .map(|v| Some(v.is_some_and(|s| nulls.matches(s))))
            .collect();
        let nulled = if named_null.true_count() == 0 {
            text
        } else {
            nullif(&text, &named_null).map_err(column_error(field))?
        };
        let typed: ArrayRef = if field.data_type() == &DataType::Utf8 {
            nulled
        } else {
            let strict = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(&nulled, field.data_type(), &strict).map_err(column_error(field))?
        };
        columns.push(typed);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(TypingError::Batch)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};

    use super::*;
    use datafusion::prelude::SessionContext;

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
            .map(|b| b.map_err(|e| error::clean_message(&e)))
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

    #[test]
    fn typing_nulls_whole_fields_and_shares_the_text() {
        use datafusion::arrow::array::{ArrayRef, StringArray};
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1"),
            Some("NULL"),
            None,
            Some("null"),
            Some("4"),
        ]));
        let words: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("NA"),
            Some(""),
            Some("NAN"),
            Some("e"),
        ]));
        let batch = RecordBatch::try_from_iter([("n", text), ("w", Arc::clone(&words))]).unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("w", DataType::Utf8, true),
        ]));
        let nulls = NullValues(vec!["".into(), "NULL".into(), "NA".into()]);
        let err = type_batch(&batch, &nulls, &schema).unwrap_err();
        assert!(
            err.to_string().contains("column n"),
            "'null' is not a null value: {err}"
        );
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1"),
            Some("NULL"),
            None,
            Some(""),
            Some("4"),
        ]));
        let batch = RecordBatch::try_from_iter([("n", text), ("w", Arc::clone(&words))]).unwrap();
        let typed = type_batch(&batch, &nulls, &schema).unwrap();
        let n = typed.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            vec![Some(1), None, None, None, Some(4)]
        );
        let w = typed.column(1).as_string::<i32>();
        assert_eq!(
            w.iter().collect::<Vec<_>>(),
            vec![Some("a"), None, None, Some("NAN"), Some("e")]
        );
        assert_eq!(
            w.values().as_ptr(),
            words.as_string::<i32>().values().as_ptr(),
            "the text is shared, not copied"
        );
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
}
