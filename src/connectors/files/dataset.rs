//! Parquet datasets (a `columnar_db` store of engine `parquet`): each table a directory of
//! Parquet files or one `<table>.parquet` file; read by table or by a DataFusion query over
//! all of them, written partition by partition into a staged directory swapped in at publish.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

use super::parquet::{open_parquet, parquet_table, stage_parquet_merge, write_parquet_file};
use super::{checked_stream, df_error, resolve_files, urls};
use crate::connectors::error;
use crate::connectors::fsutil::{self, StagedDir, STAGING_PREFIX};
use crate::connectors::paths::check_inside;
use crate::connectors::{
    store_path, ConnectorError, IoContext, Load, Opened, RowsCallback, SinkConnector, SourceConnector,
    SourceTable,
};
use crate::domain::spec::{Source, SourceRead, WriteMode};
use crate::domain::store::DataStore;

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
            return Ok(vec![check_inside(&file, &self.root)?]);
        }
        let known = self.tables().unwrap_or_default();
        let hint = crate::domain::names::did_you_mean_hint(table, known.iter().map(String::as_str));
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
                    .map_err(|e| ConnectorError::permanent_from(self.root.display(), e))?;
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
        let err = |e: std::io::Error| ConnectorError::permanent_from(staged.display(), e);
        std::fs::create_dir_all(&self.root).map_err(err)?;
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(err)?;
        }
        let dir = StagedDir::new(&staged).map_err(err)?;
        let writeback = fsutil::Writeback::for_dir(dir.path());
        let rows = write_parts(dir.path(), part_prefix, partitions).await?;
        drop(writeback);
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
        let err = |e: std::io::Error| ConnectorError::permanent_from(staged.display(), e);
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
                let err = |e: std::io::Error| ConnectorError::permanent_from(dataset.display(), e);
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
                fsutil::sync_dir(Some(&dataset));
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
        files.push(done.map_err(|e| ConnectorError::permanent_from("writing parquet", e))??);
    }
    files.sort();
    let rows: u64 = files.iter().map(|(_, r)| r).sum();
    let empty: Vec<&PathBuf> = files.iter().filter(|(_, r)| *r == 0).map(|(p, _)| p).collect();
    let keep_one = usize::from(empty.len() == files.len());
    for path in empty.into_iter().skip(keep_one) {
        std::fs::remove_file(path).map_err(|e| ConnectorError::permanent_from(path.display(), e))?;
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
            .map_err(|e| error::to_connector_error(e, "running the query to write"))?;
        self.stage_partitions(load, partitions, ctx).await
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        for load in loads {
            let dest = self.root.join(&load.table);
            let err = |e: std::io::Error| {
                ConnectorError::permanent_from(format_args!("publishing {}", dest.display()), e)
            };
            let staged_dir = self.staged_dir(load);
            match load.mode {
                WriteMode::Replace | WriteMode::Merge => {
                    if self.marker(load).exists() {
                        // Swapped in before a crash: the staged directory holds the old data.
                        ignore_missing(std::fs::remove_dir_all(&staged_dir)).map_err(err)?;
                    } else if staged_dir.exists() {
                        fsutil::replace_dir(&staged_dir, &dest).map_err(err)?;
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
                    fsutil::sync_dir(Some(&dest));
                }
            }
        }
        fsutil::sync_dir(Some(&self.root));
        Ok(Vec::new())
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        for load in loads {
            let staged_dir = self.staged_dir(load);
            let err = |e: std::io::Error| {
                ConnectorError::permanent_from(format_args!("removing {}", staged_dir.display()), e)
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
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::super::parquet::parquet_rows;
    use super::*;
    use crate::domain::store::{Connection, FileConnection, StoreEngine, StoreKind};

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
