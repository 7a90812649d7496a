//! Checkpoints: the result of a materialized node, kept in the flow's work directory so its
//! readers (and a restarted or retried flow) read it instead of recomputing it.
//!
//! Layout: `work_dir/nodes/<node>/part-<i>.arrow`, one Arrow IPC file per partition of the
//! node's plan, written by one task per partition at once (never funnelled through one
//! thread), plus `_meta.json` with each file's rows and size. The directory is written under a
//! temporary name and renamed into place when complete, so a checkpoint either exists whole or
//! not at all; `is_valid` also checks the sizes, so one torn by a power cut (nothing is
//! fsynced: a lost checkpoint is only recomputed) is not trusted.
//!
//! Why Arrow IPC: it is the engine's own memory layout, so writing and reading it costs little
//! more than copying bytes, where Parquet encodes and compresses every column (measured:
//! README → Performance). Compression stays off: checkpoints live one flow long, mostly in the
//! page cache, and on a CPU-bound machine LZ4 cost more than the bytes it saved.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::boundary::Size;
use super::source_table::TrackedTable;

/// Where node `node`'s checkpoint lives.
pub fn dir(work_dir: &Path, node: &str) -> PathBuf {
    work_dir.join("nodes").join(node)
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    rows: u64,
    files: Vec<FileMeta>,
    /// Sets of columns (by index) the rows are unique on, as the node's plan proved
    /// (`eager_aggregate::unique_sets`); kept so a resumed flow's readers know them too.
    #[serde(default)]
    unique: Vec<Vec<usize>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileMeta {
    name: String,
    rows: u64,
    bytes: u64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("{what} {}: {e}", path.display()))
}

/// Writes every partition of a node's result as its checkpoint, all at once, with the column
/// sets its rows are unique on. Returns its rows. Dropping the future stops the writers; the
/// temporary directory is removed by the next attempt or with the work directory.
pub async fn write(
    work_dir: &Path,
    node: &str,
    partitions: Vec<SendableRecordBatchStream>,
    unique: Vec<Vec<usize>>,
) -> Result<u64, DataFusionError> {
    let dest = dir(work_dir, node);
    let temp = work_dir.join("nodes").join(format!(".tmp-{node}"));
    let prepare = {
        let (dest, temp) = (dest.clone(), temp.clone());
        move || -> Result<(), DataFusionError> {
            for stale in [&temp, &dest] {
                match std::fs::remove_dir_all(stale) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("removing", stale, e)),
                }
            }
            std::fs::create_dir_all(&temp).map_err(|e| io_error("creating", &temp, e))
        }
    };
    tokio::task::spawn_blocking(prepare)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;

    let mut writers = tokio::task::JoinSet::new();
    for (i, stream) in partitions.into_iter().enumerate() {
        let path = temp.join(format!("part-{i:05}.arrow"));
        writers.spawn(write_partition(path, stream));
    }
    let mut files = Vec::new();
    while let Some(done) = writers.join_next().await {
        let file = done.map_err(|e| DataFusionError::External(Box::new(e)))??;
        files.push(file);
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let meta = Meta {
        rows: files.iter().map(|f| f.rows).sum(),
        files,
        unique,
    };
    let rows = meta.rows;
    let commit = move || -> Result<(), DataFusionError> {
        let text = serde_json::to_vec(&meta).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let meta_path = temp.join("_meta.json");
        std::fs::write(&meta_path, text).map_err(|e| io_error("writing", &meta_path, e))?;
        std::fs::rename(&temp, &dest).map_err(|e| io_error("committing", &dest, e))
    };
    tokio::task::spawn_blocking(commit)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
    Ok(rows)
}

/// Writes one partition into one IPC file. The writes are plain file writes on the engine
/// runtime: they land in the page cache, which is quicker than a hop to a blocking thread.
async fn write_partition(
    path: PathBuf,
    mut stream: SendableRecordBatchStream,
) -> Result<FileMeta, DataFusionError> {
    let file = std::fs::File::create(&path).map_err(|e| io_error("creating", &path, e))?;
    let mut writer = FileWriter::try_new_with_options(
        BufWriter::with_capacity(1 << 20, file),
        &stream.schema(),
        IpcWriteOptions::default(),
    )?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    drop(writer);
    let bytes = std::fs::metadata(&path)
        .map_err(|e| io_error("reading", &path, e))?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(FileMeta { name, rows, bytes })
}

fn read_meta(work_dir: &Path, node: &str) -> Option<Meta> {
    let text = std::fs::read(dir(work_dir, node).join("_meta.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether node `node` has a whole checkpoint (every file present at its recorded size).
/// Reads the file system: call it off the actors' threads.
pub fn is_valid(work_dir: &Path, node: &str) -> bool {
    super::debug_assert_off_arbiter("checking a checkpoint");
    let Some(meta) = read_meta(work_dir, node) else {
        return false;
    };
    let dir = dir(work_dir, node);
    meta.files.iter().all(|f| {
        std::fs::metadata(dir.join(&f.name))
            .map(|m| m.len() == f.bytes)
            .unwrap_or(false)
    })
}

/// Rows in a checkpoint, if it is there.
pub fn rows(work_dir: &Path, node: &str) -> Option<u64> {
    read_meta(work_dir, node).map(|m| m.rows)
}

/// The checkpoint as a table: one partition per file.
pub async fn table(
    state: &SessionState,
    work_dir: &Path,
    node: &str,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let mut path = dir(work_dir, node).to_string_lossy().into_owned();
    if !path.ends_with('/') {
        path.push('/');
    }
    let url = ListingTableUrl::parse(&path)?;
    let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow");
    let schema = options.infer_schema(state, &url).await?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let table: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
    // Arrow IPC files report no statistics; the checkpoint knows its size exactly, which the
    // planner uses to choose join sides.
    let (dir, name) = (work_dir.to_path_buf(), node.to_string());
    let meta = tokio::task::spawn_blocking(move || read_meta(&dir, &name))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let size = meta.as_ref().map(|m| Size {
        rows: m.rows,
        bytes: Some(m.files.iter().map(|f| f.bytes).sum()),
        exact: true,
    });
    let fields = table.schema().fields().len();
    let unique = meta
        .map(|m| m.unique)
        .unwrap_or_default()
        .into_iter()
        .filter(|set| set.iter().all(|&i| i < fields))
        .collect();
    Ok(Arc::new(TrackedTable {
        inner: table,
        tracker: None,
        size,
        unique,
    }))
}

fn staged_marker(work_dir: &Path, unit: &str) -> PathBuf {
    work_dir.join("staged").join(unit)
}

/// Records that persist unit `unit` staged its `rows` into its target, so a restarted flow
/// does not stage them again.
pub fn mark_staged(work_dir: &Path, unit: &str, rows: u64) -> std::io::Result<()> {
    let dest = staged_marker(work_dir, unit);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let staged = crate::connectors::fsutil::StagedFile::new(&dest)?;
    std::fs::write(staged.path(), rows.to_string())?;
    staged.commit_unsynced()
}

/// The rows persist unit `unit` staged in an earlier run, if it did.
pub fn staged(work_dir: &Path, unit: &str) -> Option<u64> {
    super::debug_assert_off_arbiter("reading a staged marker");
    std::fs::read_to_string(staged_marker(work_dir, unit))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Gives flow work directory `to` the checkpoint of node `node` that `from` holds, without
/// copying its bytes where the file system allows (hard links; a copy otherwise). Like
/// `write`, it goes through a temporary directory renamed into place, so the checkpoint in
/// `to` is whole or absent. Used by a retry to take over what the failed flow finished.
/// Blocking: call it off the actors' threads.
pub fn link(from: &Path, to: &Path, node: &str) -> std::io::Result<()> {
    super::debug_assert_off_arbiter("linking a checkpoint");
    let source = dir(from, node);
    let dest = dir(to, node);
    let temp = to.join("nodes").join(format!(".tmp-{node}"));
    for stale in [&temp, &dest] {
        match std::fs::remove_dir_all(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::create_dir_all(&temp)?;
    for entry in std::fs::read_dir(&source)? {
        let entry = entry?;
        let target = temp.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    std::fs::rename(&temp, &dest)
}

/// Removes what a flow that ended without completing keeps besides its checkpoints (spill
/// files, staged markers: its staged outputs were discarded), and the whole directory when it
/// holds no checkpoint. Blocking.
pub fn keep_only_checkpoints(work_dir: &Path) -> std::io::Result<()> {
    let nodes = work_dir.join("nodes");
    let has_checkpoint = std::fs::read_dir(&nodes)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        })
        .unwrap_or(false);
    if !has_checkpoint {
        return match std::fs::remove_dir_all(work_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    for entry in std::fs::read_dir(work_dir)? {
        let entry = entry?;
        if entry.file_name() != "nodes" {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    // Torn temporaries of checkpoints that never finished.
    for entry in std::fs::read_dir(&nodes)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
