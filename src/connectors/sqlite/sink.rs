//! Writing into SQLite: a staging table filled in transactions that hold the write lock only
//! while they write, then swapped in, appended or merged (upserted) in another; writes begin
//! IMMEDIATE so they wait for the write lock.

use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
// Identifiers in these statements are quoted by `quote_ident`; values are bound. Write
// transactions begin IMMEDIATE: a deferred one that reads first cannot wait for the write lock
// and fails at once with "database is locked" when another flow is writing.
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use super::{db_error, decl_for_arrow_type, declared_types, quote_ident, quote_ident_part, BUSY_TIMEOUT};
use crate::connectors::arrow_sql::{self, value_at, SqlValue};
use crate::connectors::relational::split_table;
use crate::connectors::{
    error, merge, store_path, ConnectorError, IoContext, Load, RowsCallback, SinkConnector,
};
use crate::domain::spec::WriteMode;
use crate::domain::store::DataStore;

pub struct SqliteSink {
    path: PathBuf,
}

impl SqliteSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(SqliteSink {
            path: store_path(store)?,
        })
    }
}

/// Binds one value for SQLite: text for decimals, dates and times (SQLite has no such types).
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    v: SqlValue,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        SqlValue::Null => q.bind(None::<i64>),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Blob(b) => q.bind(b),
        other => q.bind(arrow_sql::text_of(&other)),
    }
}

/// The staging table of a load: in the same database, never read by anyone else.
fn stage_table(load: &Load) -> String {
    format!("_sluice_stage_{}", load.key)
}

fn column_defs(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote_ident(f.name()), decl_for_arrow_type(f.data_type())))
        .collect()
}

impl SqliteSink {
    async fn connect(&self) -> Result<SqliteConnection, ConnectorError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ConnectorError::permanent_from(dir.display(), e))?;
        }
        SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))
    }
}

async fn table_exists(conn: &mut SqliteConnection, table: &str) -> Result<bool, ConnectorError> {
    Ok(!declared_types(conn, table).await?.is_empty())
}

/// The column lists of a table's unique indexes (its primary key among them; partial and
/// expression indexes left out: `ON CONFLICT` cannot use them).
async fn unique_indexes(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<Vec<String>>, ConnectorError> {
    let (schema, name) = split_table(table);
    let prefix = schema.map(|s| format!("{}.", quote_ident(s))).unwrap_or_default();
    let err = |e| db_error("reading the table's indexes", e);
    let mut indexes = Vec::new();
    let columns = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}table_info({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    let mut pk: Vec<(i64, String)> = columns
        .iter()
        .map(|r| (r.get::<i64, _>("pk"), r.get::<String, _>("name")))
        .filter(|(pk, _)| *pk > 0)
        .collect();
    pk.sort();
    if !pk.is_empty() {
        indexes.push(pk.into_iter().map(|(_, n)| n).collect());
    }
    let list = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}index_list({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    for index in list {
        if index.get::<i64, _>("unique") != 1 || index.get::<i64, _>("partial") != 0 {
            continue;
        }
        let index_name: String = index.get("name");
        let info = sqlx::query(AssertSqlSafe(format!(
            "PRAGMA {prefix}index_info({})",
            quote_ident(&index_name)
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        let names: Option<Vec<String>> = info.iter().map(|r| r.get::<Option<String>, _>("name")).collect();
        if let Some(names) = names {
            indexes.push(names);
        }
    }
    Ok(indexes)
}

/// Publishes one staged `merge` load inside the publish transaction: a new target is the staged
/// table with a unique index on the key; an existing one gets the rows upserted (`ON
/// CONFLICT` when a unique index covers the key, else update-then-insert).
async fn merge_staged(
    tx: &mut SqliteConnection,
    load: &Load,
    existing: Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> Result<(), ConnectorError> {
    let stage_name = stage_table(load);
    let stage = quote_ident(&stage_name);
    let target = quote_ident(&load.table);
    let (schema, bare) = split_table(&load.table);
    let keys: Vec<String> = load.unique_key.iter().map(|k| quote_ident_part(k)).collect();
    if existing.is_empty() {
        let index = match schema {
            Some(s) => format!(
                "{}.{}",
                quote_ident(s),
                quote_ident_part(&format!("{bare}_unique_key"))
            ),
            None => quote_ident_part(&format!("{bare}_unique_key")),
        };
        let sql = format!(
            "DROP TABLE IF EXISTS {target}; ALTER TABLE {stage} RENAME TO {}; \
             CREATE UNIQUE INDEX {index} ON {} ({})",
            quote_ident_part(bare),
            quote_ident_part(bare),
            keys.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&format!("creating {}", load.table), e))?;
        notes.push(merge::created_note(load, "a unique index"));
        return Ok(());
    }
    let staged: Vec<String> = declared_types(tx, &stage_name)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let have: Vec<String> = existing.into_iter().map(|(n, _)| n).collect();
    merge::check_columns(load, &staged, &have, true)?;
    let key_index = merge::has_key_index(&unique_indexes(tx, &load.table).await?, &load.unique_key, true);
    if !key_index {
        notes.push(merge::no_index_note(load));
    }
    let sql = merge::MergeInto {
        target: &target,
        stage: &stage,
        staged: &staged,
        keys: &load.unique_key,
        case_insensitive: true,
        value: &|name: &str| format!("s.{}", quote_ident_part(name)),
    }
    .sql(key_index);
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&format!("merging into {}", load.table), e))?;
    Ok(())
}

/// How long a staging transaction waits, holding the database's write lock, for the query's
/// next batch before it commits and lets other writers in.
const IDLE_COMMIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Writes a load's staging table in transactions that hold SQLite's write lock only while
/// rows are written: the first one drops any earlier staging table and creates it. A
/// transaction not committed is rolled back when the connection goes (a failure, or the
/// cancelled flow's future dropped).
struct StageWriter<'a> {
    sink: &'a SqliteSink,
    conn: Option<SqliteConnection>,
    open: bool,
    created: bool,
    stage: String,
    schema: &'a SchemaRef,
    columns: Vec<String>,
}

impl<'a> StageWriter<'a> {
    fn new(sink: &'a SqliteSink, load: &Load, schema: &'a SchemaRef) -> Self {
        StageWriter {
            sink,
            conn: None,
            open: false,
            created: false,
            stage: quote_ident(&stage_table(load)),
            schema,
            columns: schema.fields().iter().map(|f| quote_ident(f.name())).collect(),
        }
    }

    fn in_transaction(&self) -> bool {
        self.open
    }

    async fn execute(&mut self, sql: String, what: &str) -> Result<(), ConnectorError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.sink.connect().await?),
        };
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error(what, e))?;
        Ok(())
    }

    /// Opens a write transaction (waiting for the lock, `BEGIN IMMEDIATE`), creating the
    /// staging table in the first one.
    async fn begin(&mut self) -> Result<(), ConnectorError> {
        if self.open {
            return Ok(());
        }
        self.execute("BEGIN IMMEDIATE".into(), "starting a transaction")
            .await?;
        self.open = true;
        if !self.created {
            let stage = self.stage.clone();
            self.execute(
                format!("DROP TABLE IF EXISTS {stage}"),
                "dropping an earlier staging table",
            )
            .await?;
            let defs = column_defs(self.schema).join(", ");
            self.execute(
                format!("CREATE TABLE {stage} ({defs})"),
                "creating the staging table",
            )
            .await?;
            self.created = true;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.open {
            self.execute("COMMIT".into(), "committing the staged rows")
                .await?;
            self.open = false;
        }
        Ok(())
    }

    async fn insert(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.begin().await?;
        let ncols = self.columns.len().max(1);
        let rows_per_insert = (30_000 / ncols).clamp(1, 500);
        let row_sql = format!("({})", vec!["?"; ncols].join(", "));
        let arrays = batch.columns();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| ConnectorError::permanent("the staging connection is gone"))?;
        let mut start = 0;
        while start < batch.num_rows() {
            let end = (start + rows_per_insert).min(batch.num_rows());
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                self.stage,
                self.columns.join(", "),
                vec![row_sql.as_str(); end - start].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in start..end {
                for a in arrays {
                    q = bind(q, value_at(a, r));
                }
            }
            q.execute(&mut *conn)
                .await
                .map_err(|e| db_error("inserting rows", e))?;
            start = end;
        }
        Ok(())
    }
}

#[async_trait]
impl SinkConnector for SqliteSink {
    /// Loads the rows into the load's staging table, created fresh. SQLite has one writer per
    /// database, so the write lock is taken only once rows are there to write, and given back
    /// whenever the query keeps the next batch waiting (see [`StageWriter`]): a long query
    /// into a database never holds up the other outputs into it. The staging table is the
    /// load's own, so committing on the way loses nothing: the flow records the load as staged
    /// only once this returns, and a cancelled, failed or restarted flow drops the table.
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let schema = input.schema();
        let mut writer = StageWriter::new(self, load, &schema);
        let mut total = 0u64;
        loop {
            let next = if writer.in_transaction() {
                match tokio::time::timeout(IDLE_COMMIT, input.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        writer.commit().await?;
                        input.next().await
                    }
                }
            } else {
                input.next().await
            };
            let Some(batch) = next else { break };
            let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
            writer.insert(&batch).await?;
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        // No rows at all: the staging table still gets the result's columns.
        writer.begin().await?;
        writer.commit().await?;
        Ok(total)
    }

    /// Swaps in (`replace`), inserts (`append`) or upserts (`merge`) every staged table in one
    /// transaction.
    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut conn = self.connect().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a transaction", e))?;
        for load in loads {
            let stage_name = stage_table(load);
            if !table_exists(&mut tx, &stage_name).await? {
                continue; // published already
            }
            let stage = quote_ident(&stage_name);
            let target = quote_ident(&load.table);
            let (_, bare) = split_table(&load.table);
            let existing = declared_types(&mut tx, &load.table).await?;
            if load.mode == WriteMode::Merge {
                merge_staged(&mut tx, load, existing, &mut notes).await?;
            } else if load.mode == WriteMode::Append && !existing.is_empty() {
                let staged = declared_types(&mut tx, &stage_name).await?;
                let have: Vec<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
                let missing: Vec<&str> = staged
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| !have.contains(n))
                    .collect();
                if !missing.is_empty() {
                    return Err(ConnectorError::permanent(format!(
                        "cannot append to {}: it has no column(s) {}",
                        load.table,
                        missing.join(", ")
                    )));
                }
                let cols: Vec<String> = staged.iter().map(|(n, _)| quote_ident(n)).collect();
                let cols = cols.join(", ");
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("appending to {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {stage}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("dropping the staging table", e))?;
            } else {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {target}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&format!("dropping the old {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {stage} RENAME TO {}",
                    quote_ident(bare)
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("swapping in {}", load.table), e))?;
            }
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the publish", e))?;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if !self.path.exists() {
            return Ok(());
        }
        let mut conn = self.connect().await?;
        for load in loads {
            sqlx::query(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&stage_table(load))
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("dropping a staging table", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::prelude::SessionContext;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn context() -> IoContext {
        IoContext {
            session: SessionContext::new(),
            cancel: CancellationToken::new(),
            batch_size: 8192,
            pools: Default::default(),
        }
    }

    fn load() -> Load {
        Load {
            table: "t".into(),
            mode: WriteMode::Replace,
            unique_key: Vec::new(),
            key: "f1_0".into(),
        }
    }

    async fn other_connection(path: &std::path::Path) -> SqliteConnection {
        // No waiting for the lock: a writer holding it makes these statements fail at once.
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO)
            .connect()
            .await
            .unwrap()
    }

    /// While the query keeps its next batch waiting, the rows so far are committed and another
    /// writer gets in; once the rest arrives, the staging table has every row.
    #[tokio::test]
    async fn the_write_lock_is_given_back_while_the_query_is_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let sink = SqliteSink { path: path.clone() };
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(values))]).unwrap()
        };
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (first, second) = (batch(vec![1, 2]), batch(vec![3]));
        let rows = futures::stream::once(async move { Ok(first) }).chain(futures::stream::once(async move {
            let _ = wait.await;
            Ok(second)
        }));
        let input: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), rows));
        let staging = tokio::spawn(async move {
            let on_rows: RowsCallback = Arc::new(|_, _| {});
            sink.stage(&load(), input, &context(), on_rows).await
        });
        let mut other = other_connection(&path).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM _sluice_stage_f1_0")
                .fetch_one(&mut other)
                .await
                .ok();
            if seen == Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "the first rows were never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        sqlx::query("CREATE TABLE other (y INTEGER)")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        go.send(()).unwrap();
        assert_eq!(staging.await.unwrap().unwrap(), 3);
        let all: Vec<i64> = sqlx::query_scalar("SELECT x FROM _sluice_stage_f1_0 ORDER BY x")
            .fetch_all(&mut other)
            .await
            .unwrap();
        assert_eq!(all, vec![1, 2, 3]);
    }

    /// No rows: the staging table is still made, with the result's columns, replacing an
    /// earlier one.
    #[tokio::test]
    async fn an_empty_result_stages_an_empty_table_with_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE _sluice_stage_f1_0 (old TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        let sink = SqliteSink { path: path.clone() };
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::empty(),
        ));
        let on_rows: RowsCallback = Arc::new(|_, _| {});
        assert_eq!(sink.stage(&load(), input, &context(), on_rows).await.unwrap(), 0);
        let mut other = other_connection(&path).await;
        let columns = declared_types(&mut other, "_sluice_stage_f1_0").await.unwrap();
        assert_eq!(
            columns.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["x"]
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sluice_stage_f1_0")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
