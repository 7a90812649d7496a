//! The data layer: SeaORM queries over the metadata database, and conversions between rows and
//! domain values. Functions take `&impl ConnectionTrait` so they work inside a transaction, and
//! fail with [`RepoError`], classified by the driver's error codes (SeaORM's `sql_err()`), never
//! by message text. It knows nothing of HTTP: services decide what a failure means to a client.

use chrono::{DateTime, Utc};
use entity::{data_store, flow, flow_input, flow_output};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, SqlErr, TransactionTrait,
};

use crate::domain::dag::Dag;
use crate::domain::flow::{CheckStatus, FlowPicture, FlowState, Lines, Progress, TaskStatus};
use crate::domain::spec::FlowInputSpec;
use crate::domain::store::{Connection, DataStore, StoreEngine, StoreKind};
use crate::secrets::{redact_urls, Cipher};

pub mod leases;

/// What the data layer fails with. None of it is the caller's mistake except `Duplicate`, which
/// services may turn into a conflict.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The metadata database failed (its text redacted: it may carry a connection URL).
    #[error("metadata database: {}", redact_urls(&.0.to_string()))]
    Db(#[source] DbErr),
    /// A unique index refused the row (classified by the driver's error code).
    #[error("metadata database: {}", redact_urls(&.0.to_string()))]
    Duplicate(#[source] DbErr),
    /// A value cannot be written as JSON, or a stored one cannot be read back.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A stored row breaks an invariant: an unknown state, a missing output row, a password
    /// that does not open.
    #[error("{0}")]
    Corrupt(String),
    /// A query the data layer writes in SQL itself failed (the leases of several instances).
    #[error("metadata database: {}", redact_urls(&.0.to_string()))]
    Sql(#[source] sqlx::Error),
}

impl RepoError {
    /// The metadata database could not be reached or talked to (a connection that failed or
    /// closed, no connection to be had): trying again later may work. Told from the driver's
    /// error kinds, not from message text.
    pub fn is_unavailable(&self) -> bool {
        fn sqlx_unavailable(e: &sqlx::Error) -> bool {
            matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        }
        let db = match self {
            RepoError::Sql(e) => return sqlx_unavailable(e),
            RepoError::Db(db) => db,
            _ => return false,
        };
        match db {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
            | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => sqlx_unavailable(e),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for RepoError {
    fn from(err: sqlx::Error) -> Self {
        RepoError::Sql(err)
    }
}

impl From<DbErr> for RepoError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => RepoError::Duplicate(err),
            _ => RepoError::Db(err),
        }
    }
}

impl From<sea_orm::TransactionError<RepoError>> for RepoError {
    fn from(err: sea_orm::TransactionError<RepoError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(repo) => repo,
        }
    }
}

/// A page of a keyset-paged list, newest first.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_before_id: Option<i64>,
}

impl<T> Page<T> {
    /// The same page with every item converted by `f`.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            next_before_id: self.next_before_id,
        })
    }
}

fn page<T>(mut rows: Vec<T>, limit: u64, id: impl Fn(&T) -> i64) -> Page<T> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_before_id = if more { rows.last().map(id) } else { None };
    Page {
        items: rows,
        next_before_id,
    }
}

/// `value` as a JSON column. A NUL character in its text (a log line quoting data a flow read)
/// becomes U+FFFD: PostgreSQL cannot store NUL in text or JSON, and one line must not keep a
/// flow's state from being written.
fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RepoError> {
    let mut value = serde_json::to_value(value).map_err(|source| RepoError::Json {
        what: "serializing".into(),
        source,
    })?;
    replace_nul(&mut value);
    Ok(value)
}

fn replace_nul(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                *map = entries
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v))
                    .collect();
            }
            map.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T, RepoError> {
    serde_json::from_value(value).map_err(|source| RepoError::Json {
        what: format!("stored {what} is unreadable"),
        source,
    })
}

// ---- data stores ----------------------------------------------------------------------------

pub struct NewStore {
    pub name: String,
    pub kind: StoreKind,
    pub engine: StoreEngine,
    pub connection: Connection,
    pub password_sealed: Option<String>,
}

pub async fn insert_store(
    db: &impl ConnectionTrait,
    new: NewStore,
    now: DateTime<Utc>,
) -> Result<data_store::Model, RepoError> {
    let model = data_store::ActiveModel {
        created_utc: Set(now),
        name: Set(new.name),
        kind: Set(new.kind.as_str().to_string()),
        engine: Set(new.engine.as_str().to_string()),
        connection: Set(json(&new.connection)?),
        password_sealed: Set(new.password_sealed),
        ..Default::default()
    };
    Ok(model.insert(db).await?)
}

pub async fn store_name_taken(db: &impl ConnectionTrait, name: &str) -> Result<bool, RepoError> {
    Ok(data_store::Entity::find()
        .filter(data_store::Column::Name.eq(name))
        .one(db)
        .await?
        .is_some())
}

pub async fn get_store(db: &impl ConnectionTrait, id: i64) -> Result<Option<data_store::Model>, RepoError> {
    Ok(data_store::Entity::find_by_id(id).one(db).await?)
}

pub async fn stores_by_ids(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<Vec<data_store::Model>, RepoError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(data_store::Entity::find()
        .filter(data_store::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

pub async fn list_stores(
    db: &impl ConnectionTrait,
    limit: u64,
    before_id: Option<i64>,
) -> Result<Page<data_store::Model>, RepoError> {
    let mut q = data_store::Entity::find()
        .order_by_desc(data_store::Column::Id)
        .limit(limit + 1);
    if let Some(before) = before_id {
        q = q.filter(data_store::Column::Id.lt(before));
    }
    Ok(page(q.all(db).await?, limit, |m| m.id))
}

/// A stored data store's connection (its password stays sealed).
pub fn store_connection(m: &data_store::Model) -> Result<Connection, RepoError> {
    from_json(m.connection.clone(), "connection")
}

/// A stored data store as a domain value, its password opened with `cipher`.
pub fn store_from_model(m: data_store::Model, cipher: &Cipher) -> Result<DataStore, RepoError> {
    let kind = StoreKind::parse(&m.kind)
        .ok_or_else(|| RepoError::Corrupt(format!("store {} has unknown kind {}", m.id, m.kind)))?;
    let engine = StoreEngine::parse(&m.engine)
        .ok_or_else(|| RepoError::Corrupt(format!("store {} has unknown engine {}", m.id, m.engine)))?;
    let password = m
        .password_sealed
        .as_deref()
        .map(|sealed| {
            cipher
                .open(sealed)
                .map_err(|e| RepoError::Corrupt(format!("store {}: {e}", m.id)))
        })
        .transpose()?;
    Ok(DataStore {
        id: m.id,
        created_utc: m.created_utc,
        name: m.name,
        kind,
        engine,
        connection: from_json(m.connection, "connection")?,
        password,
    })
}

// ---- flow inputs ----------------------------------------------------------------------------

pub async fn insert_flow_input(
    db: &impl ConnectionTrait,
    spec: &FlowInputSpec,
    dag: &Dag,
    now: DateTime<Utc>,
) -> Result<flow_input::Model, RepoError> {
    let model = flow_input::ActiveModel {
        created_utc: Set(now),
        name: Set(spec.name.clone()),
        source_store_ids: Set(json(&spec.source_store_ids)?),
        target_store_id: Set(spec.target_store_id),
        sources: Set(json(&spec.sources)?),
        transforms: Set(json(&spec.transforms)?),
        outputs: Set(json(&spec.outputs)?),
        options: Set(json(&spec.options)?),
        dag: Set(json(dag)?),
        checks: Set((!spec.checks.is_empty())
            .then(|| json(&spec.checks))
            .transpose()?),
        ..Default::default()
    };
    Ok(model.insert(db).await?)
}

pub async fn get_flow_input(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<flow_input::Model>, RepoError> {
    Ok(flow_input::Entity::find_by_id(id).one(db).await?)
}

pub async fn list_flow_inputs(
    db: &impl ConnectionTrait,
    limit: u64,
    before_id: Option<i64>,
) -> Result<Page<flow_input::Model>, RepoError> {
    let mut q = flow_input::Entity::find()
        .order_by_desc(flow_input::Column::Id)
        .limit(limit + 1);
    if let Some(before) = before_id {
        q = q.filter(flow_input::Column::Id.lt(before));
    }
    Ok(page(q.all(db).await?, limit, |m| m.id))
}

/// A stored flow input's spec and DAG.
pub fn flow_input_spec(m: &flow_input::Model) -> Result<(FlowInputSpec, Dag), RepoError> {
    let spec = FlowInputSpec {
        name: m.name.clone(),
        source_store_ids: from_json(m.source_store_ids.clone(), "source_store_ids")?,
        target_store_id: m.target_store_id,
        sources: from_json(m.sources.clone(), "sources")?,
        transforms: from_json(m.transforms.clone(), "transforms")?,
        outputs: from_json(m.outputs.clone(), "outputs")?,
        options: from_json(m.options.clone(), "options")?,
        checks: match &m.checks {
            Some(checks) => from_json(checks.clone(), "checks")?,
            None => vec![],
        },
    };
    let mut dag: Dag = from_json(m.dag.clone(), "dag")?;
    // Inputs stored before materialization was planned get their decisions now.
    if dag.nodes.iter().any(|n| {
        matches!(
            n.kind,
            crate::domain::dag::NodeKind::Ingest | crate::domain::dag::NodeKind::Transform
        ) && n.materialize.is_none()
    }) {
        crate::domain::plan::plan_materialization(&mut dag, &spec.transforms, &spec.checks);
    }
    Ok((spec, dag))
}

// ---- flows and outputs ----------------------------------------------------------------------

/// Creates the flow's output (READY, as `picture` says; its id is the database's) and the flow
/// in one transaction. `exclusive_input`: the input is incremental (its flows run one at a
/// time).
pub async fn create_flow(
    db: &impl TransactionTrait,
    flow_input_id: i64,
    picture: FlowPicture,
    full_refresh: bool,
    exclusive_input: bool,
) -> Result<(flow::Model, flow_output::Model), RepoError> {
    let result = db
        .transaction::<_, _, RepoError>(move |txn| {
            Box::pin(async move {
                let mut active = picture_to_active(&picture)?;
                active.id = sea_orm::ActiveValue::NotSet;
                let output = active.insert(txn).await?;
                let flow = flow::ActiveModel {
                    created_utc: Set(output.created_utc),
                    flow_input_id: Set(flow_input_id),
                    flow_output_id: Set(output.id),
                    full_refresh: Set(full_refresh),
                    exclusive_input: Set(exclusive_input),
                    cancel_requested: Set(false),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
                Ok((flow, output))
            })
        })
        .await?;
    Ok(result)
}

pub async fn get_flow(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<(flow::Model, flow_output::Model)>, RepoError> {
    let Some(f) = flow::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let output = flow_output::Entity::find_by_id(f.flow_output_id)
        .one(db)
        .await?
        .ok_or_else(|| RepoError::Corrupt(format!("flow {id} has no output row {}", f.flow_output_id)))?;
    Ok(Some((f, output)))
}

pub async fn list_flows(
    db: &impl ConnectionTrait,
    state: Option<FlowState>,
    limit: u64,
    before_id: Option<i64>,
) -> Result<Page<(flow::Model, flow_output::Model)>, RepoError> {
    let mut q = flow::Entity::find()
        .find_also_related(flow_output::Entity)
        .order_by_desc(flow::Column::Id)
        .limit(limit + 1);
    if let Some(before) = before_id {
        q = q.filter(flow::Column::Id.lt(before));
    }
    if let Some(state) = state {
        q = q.filter(flow_output::Column::State.eq(state.as_str()));
    }
    let rows: Vec<(flow::Model, flow_output::Model)> = q
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(f, o)| o.map(|o| (f, o)))
        .collect();
    Ok(page(rows, limit, |(f, _)| f.id))
}

/// Flows a previous process left READY or RUNNING, oldest first.
pub async fn unfinished_flows(
    db: &impl ConnectionTrait,
) -> Result<Vec<(flow::Model, flow_output::Model)>, RepoError> {
    let rows = flow::Entity::find()
        .find_also_related(flow_output::Entity)
        .filter(flow_output::Column::State.is_in([FlowState::Ready.as_str(), FlowState::Running.as_str()]))
        .order_by_asc(flow::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(|(f, o)| o.map(|o| (f, o))).collect())
}

/// The flows among `ids` that exist, with their outputs.
pub async fn flows_by_ids(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<Vec<(flow::Model, flow_output::Model)>, RepoError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let rows = flow::Entity::find()
        .find_also_related(flow_output::Entity)
        .filter(flow::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(|(f, o)| o.map(|o| (f, o))).collect())
}

/// For each flow input among `input_ids` that has a COMPLETED flow, the id of its latest one.
pub async fn latest_completed_flows(
    db: &impl ConnectionTrait,
    input_ids: &[i64],
) -> Result<std::collections::HashMap<i64, i64>, RepoError> {
    if input_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(i64, i64)> = flow::Entity::find()
        .inner_join(flow_output::Entity)
        .filter(flow::Column::FlowInputId.is_in(input_ids.iter().copied()))
        .filter(flow_output::Column::State.eq(FlowState::Completed.as_str()))
        .select_only()
        .column(flow::Column::FlowInputId)
        .column_as(flow::Column::Id.max(), "latest")
        .group_by(flow::Column::FlowInputId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Writes pictures; the Persister's only way to the database. With `owner` (several
/// instances), only the pictures of flows that instance holds are written: an instance whose
/// lease another took never overwrites what the new owner writes. Returns the output ids whose
/// picture was not written for that reason.
pub async fn save_pictures(
    db: &impl TransactionTrait,
    pictures: Vec<FlowPicture>,
    owner: Option<&str>,
) -> Result<Vec<i64>, RepoError> {
    let models = pictures
        .iter()
        .map(|p| Ok((p.output_id, picture_to_active(p)?)))
        .collect::<Result<Vec<_>, RepoError>>()?;
    let owner = owner.map(str::to_string);
    let skipped = db
        .transaction::<_, _, RepoError>(move |txn| {
            Box::pin(async move {
                let mut skipped = Vec::new();
                for (id, m) in models {
                    match &owner {
                        None => {
                            m.update(txn).await?;
                        }
                        Some(owner) => {
                            let held = sea_orm::sea_query::Query::select()
                                .column(flow::Column::FlowOutputId)
                                .from(flow::Entity)
                                .and_where(flow::Column::Owner.eq(owner.as_str()))
                                .and_where(flow::Column::FlowOutputId.eq(id))
                                .to_owned();
                            let done = flow_output::Entity::update_many()
                                .set(m)
                                .filter(flow_output::Column::Id.eq(id))
                                .filter(flow_output::Column::Id.in_subquery(held))
                                .exec(txn)
                                .await?;
                            if done.rows_affected == 0 {
                                skipped.push(id);
                            }
                        }
                    }
                }
                Ok(skipped)
            })
        })
        .await?;
    Ok(skipped)
}

pub fn picture_to_active(p: &FlowPicture) -> Result<flow_output::ActiveModel, RepoError> {
    Ok(flow_output::ActiveModel {
        id: Set(p.output_id),
        created_utc: Set(p.created_utc),
        updated_utc: Set(p.updated_utc),
        state: Set(p.state.as_str().to_string()),
        progress: Set(json(&p.progress)?),
        logs: Set(json(&p.logs)?),
        errors: Set(json(&p.errors)?),
        tasks: Set(json(&p.tasks)?),
        checks: Set((!p.checks.is_empty()).then(|| json(&p.checks)).transpose()?),
        started_utc: Set(p.started_utc),
        finished_utc: Set(p.finished_utc),
        restarts: Set(p.restarts),
        cursors: Set(if p.cursors.is_empty() {
            None
        } else {
            Some(json(&p.cursors)?)
        }),
    })
}

/// The cursors of the latest COMPLETED flow of input `flow_input_id` before flow `before`:
/// where that input's cursor sources start next (empty when none completed).
pub async fn latest_completed_cursors(
    db: &impl ConnectionTrait,
    flow_input_id: i64,
    before: i64,
) -> Result<crate::domain::cursor::Cursors, RepoError> {
    let row = flow::Entity::find()
        .find_also_related(flow_output::Entity)
        .filter(flow::Column::FlowInputId.eq(flow_input_id))
        .filter(flow::Column::Id.lt(before))
        .filter(flow_output::Column::State.eq(FlowState::Completed.as_str()))
        .order_by_desc(flow::Column::Id)
        .one(db)
        .await?;
    match row.and_then(|(_, o)| o).and_then(|o| o.cursors) {
        None => Ok(Default::default()),
        Some(cursors) => from_json(cursors, "cursors"),
    }
}

/// The files each `new_files` source read in the completed flows of input `flow_input_id`
/// before flow `before` (a file read by any of them is not new).
pub async fn completed_cursor_files(
    db: &impl ConnectionTrait,
    flow_input_id: i64,
    before: i64,
) -> Result<
    std::collections::HashMap<String, std::collections::BTreeSet<crate::domain::cursor::FileMark>>,
    RepoError,
> {
    let rows = flow::Entity::find()
        .find_also_related(flow_output::Entity)
        .filter(flow::Column::FlowInputId.eq(flow_input_id))
        .filter(flow::Column::Id.lt(before))
        .filter(flow_output::Column::State.eq(FlowState::Completed.as_str()))
        .all(db)
        .await?;
    let mut read: std::collections::HashMap<String, std::collections::BTreeSet<_>> = Default::default();
    for cursors in rows.into_iter().filter_map(|(_, o)| o.and_then(|o| o.cursors)) {
        let cursors: crate::domain::cursor::Cursors = from_json(cursors, "cursors")?;
        for (source, entry) in cursors {
            if let Some(files) = entry.files {
                read.entry(source).or_default().extend(files);
            }
        }
    }
    Ok(read)
}

pub fn picture_from_model(m: flow_output::Model, max_lines: usize) -> Result<FlowPicture, RepoError> {
    let state = FlowState::parse(&m.state)
        .ok_or_else(|| RepoError::Corrupt(format!("output {} has unknown state {}", m.id, m.state)))?;
    let progress: Progress = from_json(m.progress, "progress")?;
    let logs: Lines = from_json(m.logs, "logs")?;
    let errors: Lines = from_json(m.errors, "errors")?;
    let tasks: Vec<TaskStatus> = from_json(m.tasks, "tasks")?;
    let cursors = match m.cursors {
        None => Default::default(),
        Some(c) => from_json(c, "cursors")?,
    };
    let checks: Vec<CheckStatus> = match m.checks {
        Some(checks) => from_json(checks, "checks")?,
        None => vec![],
    };
    let mut picture = FlowPicture::restore(
        m.id,
        m.created_utc,
        m.updated_utc,
        state,
        progress,
        logs,
        errors,
        tasks,
        m.started_utc,
        m.finished_utc,
        m.restarts,
        max_lines,
    )
    .with_check_statuses(checks);
    picture.cursors = cursors;
    Ok(picture)
}

/// How many flows are in each state, leaving out the flows in `except`.
pub async fn count_flows_by_state(
    db: &impl ConnectionTrait,
    except: &[i64],
) -> Result<Vec<(FlowState, i64)>, RepoError> {
    let rows: Vec<(String, i64)> = flow_output::Entity::find()
        .filter(flow_output::Column::Id.is_not_in(except.iter().copied()))
        .select_only()
        .column(flow_output::Column::State)
        .column_as(flow_output::Column::Id.count(), "n")
        .group_by(flow_output::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(state, n)| FlowState::parse(&state).map(|s| (s, n)))
        .collect())
}

/// Whether the metadata database answers.
pub async fn ping(db: &sea_orm::DatabaseConnection) -> Result<(), RepoError> {
    Ok(db.ping().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_columns_hold_no_nul_character() {
        let v = json(&serde_json::json!({"lines": ["a\u{0}b"], "k\u{0}": {"x": "\u{0}"}, "n": 1})).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"lines": ["a\u{FFFD}b"], "k\u{FFFD}": {"x": "\u{FFFD}"}, "n": 1})
        );
    }

    /// A fresh metadata database in memory, migrated like a real one.
    async fn metadata_db() -> sea_orm::DatabaseConnection {
        let mut options = sea_orm::ConnectOptions::new("sqlite::memory:");
        options.max_connections(1).sqlx_logging(false);
        let db = sea_orm::Database::connect(options).await.unwrap();
        <migration::Migrator as migration::MigratorTrait>::up(&db, None)
            .await
            .unwrap();
        db
    }

    fn file_store(name: &str) -> NewStore {
        NewStore {
            name: name.into(),
            kind: StoreKind::File,
            engine: StoreEngine::Csv,
            connection: Connection::File(crate::domain::store::FileConnection { path: "/data".into() }),
            password_sealed: None,
        }
    }

    #[tokio::test]
    async fn a_taken_name_is_a_duplicate_by_its_error_code() {
        let db = metadata_db().await;
        let now = crate::domain::time::now();
        insert_store(&db, file_store("lake"), now).await.unwrap();
        let err = insert_store(&db, file_store("lake"), now).await.unwrap_err();
        assert!(matches!(err, RepoError::Duplicate(_)), "{err:?}");
        insert_store(&db, file_store("lake2"), now).await.unwrap();
    }

    #[test]
    fn database_errors_are_redacted_but_keep_their_source() {
        let err = RepoError::from(DbErr::Custom("cannot reach postgres://app:s3cret@db/meta".into()));
        assert!(matches!(err, RepoError::Db(_)));
        assert_eq!(
            err.to_string(),
            "metadata database: Custom Error: cannot reach postgres://app:***@db/meta"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_page_maps_its_items_and_keeps_its_cursor() {
        let rows = vec![5i64, 4, 3];
        let p = page(rows, 2, |id| *id);
        assert_eq!(p.next_before_id, Some(4));
        let mapped = p.try_map(|id| Ok::<_, String>(id * 10)).unwrap();
        assert_eq!((mapped.items, mapped.next_before_id), (vec![50, 40], Some(4)));
        let failed = page(vec![1i64], 5, |id| *id).try_map(|_| Err::<i64, _>("no"));
        assert_eq!(failed.err(), Some("no"));
    }

    #[test]
    fn unreadable_json_names_what_it_is() {
        let err = from_json::<Progress>(serde_json::json!("nope"), "progress").unwrap_err();
        assert!(
            err.to_string().starts_with("stored progress is unreadable: "),
            "{err}"
        );
    }
}
