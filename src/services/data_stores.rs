//! Data stores: validate, resolve file paths inside the allowed roots, seal the password, store;
//! read them back as [`DataStoreRecord`]s; check that a store can be used.

use chrono::{DateTime, Utc};
use entity::data_store;

use super::store_paths::resolve_in_roots;
use super::{Page, Services};
use crate::domain::store::{validate_new_store, Connection, FileConnection, NewDataStoreRequest};
use crate::domain::time;
use crate::error::{AppError, FieldError};
use crate::repo::{self, NewStore, RepoError};

pub use crate::connectors::CheckReport;

/// A stored data store as clients may see it: its connection decoded, of its password only
/// whether one is set.
pub struct DataStoreRecord {
    pub id: i64,
    pub created_utc: DateTime<Utc>,
    pub name: String,
    /// As stored (`relational_db`, `columnar_db`, `file`).
    pub kind: String,
    /// As stored (`postgres`, `csv`, ...).
    pub engine: String,
    pub connection: Connection,
    pub password_set: bool,
}

impl DataStoreRecord {
    fn from_model(m: data_store::Model) -> Result<Self, RepoError> {
        Ok(DataStoreRecord {
            connection: repo::store_connection(&m)?,
            password_set: m.password_sealed.is_some(),
            id: m.id,
            created_utc: m.created_utc,
            name: m.name,
            kind: m.kind,
            engine: m.engine,
        })
    }
}

impl Services {
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub async fn create_data_store(&self, req: NewDataStoreRequest) -> Result<DataStoreRecord, AppError> {
        let roots = &self.settings.files.allowed_roots;
        let file_path = (req.connection.conn_type == "file")
            .then(|| req.connection.path.clone())
            .flatten()
            .filter(|p| !p.trim().is_empty());
        let mut valid = match validate_new_store(req) {
            Ok(valid) => valid,
            Err(mut errors) => {
                // The path needs the file system, so validation leaves it out; check it here too
                // so that every problem is reported at once.
                if let Some(Err(msg)) = file_path.map(|p| resolve_in_roots(&p, roots)) {
                    errors.push(FieldError::new("connection.path", msg));
                }
                return Err(AppError::Invalid(errors));
            }
        };
        if let Connection::File(FileConnection { path }) = &valid.connection {
            let resolved = resolve_in_roots(path, roots)
                .map_err(|msg| AppError::Invalid(vec![FieldError::new("connection.path", msg)]))?;
            valid.connection = Connection::File(FileConnection {
                path: resolved.to_string_lossy().into_owned(),
            });
        }
        if repo::store_name_taken(&self.db, &valid.name).await? {
            return Err(AppError::Conflict(format!(
                "a data store named {:?} already exists",
                valid.name
            )));
        }
        let password_sealed = valid
            .password
            .as_deref()
            .map(|p| self.cipher.seal(p))
            .transpose()
            .map_err(|e| AppError::internal("sealing the password", e))?;
        let new = NewStore {
            name: valid.name,
            kind: valid.kind,
            engine: valid.engine,
            connection: valid.connection,
            password_sealed,
        };
        let model = repo::insert_store(&self.db, new, time::now())
            .await
            .map_err(|e| match e {
                // Two creations racing for one name: the unique index decides.
                RepoError::Duplicate(_) => {
                    AppError::Conflict("a data store with this name already exists".into())
                }
                other => other.into(),
            })?;
        Ok(DataStoreRecord::from_model(model)?)
    }

    pub async fn get_data_store(&self, id: i64) -> Result<DataStoreRecord, AppError> {
        Ok(DataStoreRecord::from_model(self.data_store_model(id).await?)?)
    }

    async fn data_store_model(&self, id: i64) -> Result<data_store::Model, AppError> {
        repo::get_store(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("data store", id))
    }

    /// Connects to the store (on the engine's runtime, through its pool) and reports latency
    /// and server version, or why it cannot be used.
    #[tracing::instrument(skip(self))]
    pub async fn check_data_store(&self, id: i64) -> Result<CheckReport, AppError> {
        let model = self.data_store_model(id).await?;
        let store = repo::store_from_model(model, &self.cipher)?;
        let engine = self.engine.clone();
        let checked = self
            .engine
            .handle()
            .spawn(async move {
                engine
                    .check_store(&store, std::time::Duration::from_secs(30))
                    .await
            })
            .await
            .map_err(|e| AppError::internal("the store check crashed", e))?;
        checked.map_err(|e| AppError::StoreCheck(e.message))
    }

    pub async fn list_data_stores(
        &self,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<Page<DataStoreRecord>, AppError> {
        let page = repo::list_stores(&self.db, limit, before_id).await?;
        Ok(page.try_map(DataStoreRecord::from_model)?)
    }
}
