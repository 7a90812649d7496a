//! Parquet files: the source (a glob of files, read or scanned by DataFusion), the sink (one
//! file staged beside the target and renamed over it), and the Parquet writer that datasets
//! and checkpoints use too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::ParquetReadOptions;
use futures::StreamExt;

use super::{
    checked_stream, df_error, discard_files, merge_frames, merge_input_file, publish_files, source_files,
    staged_file, urls, RemoveOnDrop,
};
use crate::connectors::error;
use crate::connectors::fsutil::{StagedFile, Writeback};
use crate::connectors::{
    store_path, ConnectorError, IoContext, Load, Opened, RowsCallback, SinkConnector, SourceConnector,
    SourceTable,
};
use crate::domain::spec::{Source, SourceRead, WriteMode};
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

/// Rows in Parquet files, from their footers.
pub(super) fn parquet_rows(files: &[PathBuf]) -> Option<u64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let mut total = 0u64;
    for f in files {
        let reader = SerializedFileReader::new(std::fs::File::open(f).ok()?).ok()?;
        total += reader.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Some(total)
}

/// Parquet files read by DataFusion, and how many rows they hold (from their footers) when
/// every footer could be read.
async fn read_parquet(
    files: Vec<PathBuf>,
    ctx: &IoContext,
    label: &str,
) -> Result<(DataFrame, Option<u64>), ConnectorError> {
    let df = ctx
        .session
        .read_parquet(urls(&files), ParquetReadOptions::default().file_extension(""))
        .await
        .map_err(|e| df_error(label, e))?;
    let estimated_rows = tokio::task::spawn_blocking(move || parquet_rows(&files))
        .await
        .ok()
        .flatten();
    Ok((df, estimated_rows))
}

pub(super) async fn open_parquet(
    files: Vec<PathBuf>,
    ctx: &IoContext,
    label: &str,
) -> Result<Opened, ConnectorError> {
    let (df, estimated_rows) = read_parquet(files, ctx, label).await?;
    let stream = df.execute_stream().await.map_err(|e| df_error(label, e))?;
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
pub(super) async fn parquet_table(
    files: Vec<PathBuf>,
    ctx: &IoContext,
    label: &str,
) -> Result<SourceTable, ConnectorError> {
    let (df, estimated_rows) = read_parquet(files, ctx, label).await?;
    Ok(SourceTable {
        table: df.into_view(),
        estimated_rows,
        // Parquet files carry their own statistics.
        estimated_bytes: None,
    })
}

/// Writes `input` as one Parquet file at `path`. Returns the rows written.
pub async fn write_parquet_file(
    path: &Path,
    mut input: SendableRecordBatchStream,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let io =
        |e: std::io::Error| ConnectorError::permanent_from(format_args!("writing {}", path.display()), e);
    let file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut writer = AsyncArrowWriter::try_new(file, input.schema(), Some(parquet_properties()))
        .map_err(|e| ConnectorError::permanent_from("writing parquet", e))?;
    let mut rows = 0u64;
    while let Some(batch) = input.next().await {
        let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
        rows += batch.num_rows() as u64;
        writer
            .write(&batch)
            .await
            .map_err(|e| ConnectorError::permanent_from("writing parquet", e))?;
        on_rows(rows, None);
    }
    writer
        .close()
        .await
        .map_err(|e| ConnectorError::permanent_from("writing parquet", e))?;
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
        let io = |e: std::io::Error| ConnectorError::permanent_from(dest.display(), e);
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
        let writeback = Writeback::for_file(staged.path());
        let rows = write_parquet_file(staged.path(), input, &on_rows).await?;
        drop(writeback);
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
                .map_err(|e| error::to_connector_error(e, "running the query to write"))?;
            return self.stage(load, stream, ctx, on_rows).await;
        }
        let dest = self.root.join(format!("{}.parquet", load.table));
        let io = |e: std::io::Error| ConnectorError::permanent_from(dest.display(), e);
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
        let writeback = Writeback::for_file(staged.path());
        let written = input
            .write_parquet(
                staged.path().to_string_lossy().as_ref(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .map_err(|e| error::to_connector_error(e, "writing parquet"))?;
        drop(writeback);
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
pub(super) async fn stage_parquet_merge(
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
