//! File connectors: CSV and Parquet files (a glob under a `file` store's path), Parquet datasets
//! (a `columnar_db` store: one directory or file per table), and their atomic sinks.
//!
//! This module holds what they share: which files a source reads, DataFusion errors as
//! connector errors, and how a file sink stages, publishes and discards (a hidden file beside
//! its target, renamed over it). Each format is a module of its own:
//!
//! - `csv`: the CSV source (typing, null values, parallel reads), with `csv_location`
//!   (which file and line a CSV read failed at) and `csv_sink` (writing, appending, merging);
//! - `parquet`: Parquet file sources and sinks, and the Parquet writer checkpoints use too;
//! - `dataset`: Parquet datasets (a table a directory of Parquet files).

mod csv;
mod csv_location;
mod csv_sink;
mod dataset;
mod parquet;

use std::path::{Path, PathBuf};

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

pub use self::csv::CsvSource;
pub use self::csv_sink::CsvFileSink;
pub use self::dataset::{ParquetDatasetSink, ParquetDatasetSource};
pub use self::parquet::{parquet_properties, write_parquet_file, ParquetFileSink, ParquetFileSource};
use super::fsutil::STAGING_PREFIX;
use super::paths::check_inside;
use super::{ConnectorError, Load};
use crate::domain::spec::Source;

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
    let entries = glob::glob(&full_text).map_err(|e| {
        ConnectorError::permanent_from(format_args!("path {pattern:?} is not a valid glob"), e)
    })?;
    for entry in entries {
        let path = entry.map_err(|e| {
            ConnectorError::permanent(format!("cannot read {}: {}", e.path().display(), e.error()))
        })?;
        if path.is_dir() || is_hidden(&path) {
            continue;
        }
        files.push(check_inside(&path, root)?);
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
    ConnectorError::permanent(format!("{context}: {}", super::error::clean_message(&e))).caused_by(e)
}

/// Wraps a DataFusion stream so its errors become connector errors that name the source.
fn checked_stream(stream: SendableRecordBatchStream, label: String) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let mapped = stream.map(move |r| {
        r.map_err(|e| {
            let message = format!("{label}: {}", super::error::clean_message(&e));
            DataFusionError::External(Box::new(ConnectorError::permanent(message).caused_by(e)))
        })
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, mapped))
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
            .map_err(|e| ConnectorError::permanent_from(format_args!("publishing {}", dest.display()), e))?;
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
                return Err(ConnectorError::permanent_from(
                    format_args!("removing {}", staged.display()),
                    e,
                ))
            }
        }
    }
    Ok(())
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
