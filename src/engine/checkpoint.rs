//! Checkpoints: each ingest and transform node's result as one Parquet file in the flow's work
//! directory, registered as a table so downstream nodes read it. A restarted flow re-registers
//! the valid ones and runs only what is missing.

use std::path::{Path, PathBuf};

use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::connectors::fsutil::StagedFile;
use crate::connectors::{files::write_parquet_file, ConnectorError, RowsCallback};

pub fn path(work_dir: &Path, node: &str) -> PathBuf {
    work_dir.join(format!("{node}.parquet"))
}

/// Writes `stream` as the node's checkpoint (invisible until complete). Returns its rows.
pub async fn write(
    work_dir: &Path,
    node: &str,
    stream: SendableRecordBatchStream,
    on_rows: &RowsCallback,
) -> Result<u64, ConnectorError> {
    let dest = path(work_dir, node);
    let staged = StagedFile::new(&dest)
        .map_err(|e| ConnectorError::permanent(format!("checkpoint {}: {e}", dest.display())))?;
    let rows = write_parquet_file(staged.path(), stream, on_rows).await?;
    // Not fsynced: a checkpoint lost in a power cut is detected on resume and recomputed.
    staged
        .commit_unsynced()
        .map_err(|e| ConnectorError::permanent(format!("checkpoint {}: {e}", dest.display())))?;
    Ok(rows)
}

/// Registers the node's checkpoint as table `node`.
pub async fn register(ctx: &SessionContext, work_dir: &Path, node: &str) -> Result<(), String> {
    let file = path(work_dir, node);
    let _ = ctx.deregister_table(node);
    ctx.register_parquet(
        node,
        file.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| {
        format!(
            "registering checkpoint of {node}: {}",
            super::errors::clean_message(&e)
        )
    })
}

fn staged_marker(work_dir: &Path, node: &str) -> PathBuf {
    work_dir.join(format!("{node}.staged"))
}

/// Records that source `node` streamed its `rows` straight into its output's staging area
/// (it has no checkpoint).
pub fn mark_staged(work_dir: &Path, node: &str, rows: u64) -> Result<(), String> {
    let dest = staged_marker(work_dir, node);
    let staged = StagedFile::new(&dest).map_err(|e| format!("marker {}: {e}", dest.display()))?;
    std::fs::write(staged.path(), rows.to_string())
        .and_then(|()| staged.commit_unsynced())
        .map_err(|e| format!("marker {}: {e}", dest.display()))
}

/// The rows source `node` staged straight into its output, if it did.
pub fn staged(work_dir: &Path, node: &str) -> Option<u64> {
    std::fs::read_to_string(staged_marker(work_dir, node))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether node `node` finished in an earlier run: its checkpoint exists and its footer reads
/// (a torn write fails this), or it staged its rows straight into its output.
pub fn is_done(work_dir: &Path, node: &str) -> bool {
    is_valid(work_dir, node) || staged(work_dir, node).is_some()
}

/// Whether a checkpoint exists and its footer reads (a torn write fails this).
pub fn is_valid(work_dir: &Path, node: &str) -> bool {
    use datafusion::parquet::file::reader::SerializedFileReader;
    std::fs::File::open(path(work_dir, node))
        .ok()
        .and_then(|f| SerializedFileReader::new(f).ok())
        .is_some()
}

/// Rows in a checkpoint, from its footer.
pub fn rows(work_dir: &Path, node: &str) -> Option<u64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let f = std::fs::File::open(path(work_dir, node)).ok()?;
    let r = SerializedFileReader::new(f).ok()?;
    Some(r.metadata().file_metadata().num_rows().max(0) as u64)
}
