//! The CSV sink: a new file staged beside the target (for `append`, the current rows then the
//! new ones; for `merge`, the old rows whose key the result does not have, then the result),
//! published by one rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::CsvReadOptions;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::csv::text_schema;
use super::{
    df_error, discard_files, merge_frames, merge_input_file, publish_files, staged_file, RemoveOnDrop,
};
use crate::connectors::error;
use crate::connectors::fsutil::StagedFile;
use crate::connectors::{store_path, ConnectorError, IoContext, Load, RowsCallback, SinkConnector};
use crate::domain::spec::WriteMode;
use crate::domain::store::DataStore;

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
        let io =
            |e: std::io::Error| ConnectorError::permanent_from(format_args!("writing {}", dest.display()), e);
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

/// Writes `input` as CSV to `path`: a header line first unless `appending` to a file that has
/// one. Batches are encoded on several threads at once and written in their order. Returns
/// the rows written.
async fn write_csv(
    path: &Path,
    input: SendableRecordBatchStream,
    appending: bool,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let io =
        |e: std::io::Error| ConnectorError::permanent_from(format_args!("writing {}", path.display()), e);
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
                let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(Vec::with_capacity(batch.get_array_memory_size()));
                w.write(&batch)
                    .map_err(|e| ConnectorError::permanent_from("encoding csv", e))?;
                Ok::<_, ConnectorError>((batch.num_rows() as u64, w.into_inner()))
            })
        })
        .buffered(parallel);
    let mut rows = 0u64;
    while let Some(done) = encoded.next().await {
        let (n, bytes) = done.map_err(|e| ConnectorError::permanent_from("encoding csv", e))??;
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
    let f = std::fs::File::open(dest).map_err(|e| ConnectorError::permanent_from(dest.display(), e))?;
    let mut first = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut first)
        .map_err(|e| ConnectorError::permanent(e.to_string()).caused_by(e))?;
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
