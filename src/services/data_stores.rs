//! Data stores: validate, resolve file paths inside the allowed roots, seal the password, store.

use entity::data_store;

use super::Services;
use crate::domain::paths::resolve_in_roots;
use crate::domain::store::{validate_new_store, Connection, FileConnection, NewDataStoreRequest};
use crate::domain::time;
use crate::error::{AppError, FieldError};
use crate::repo::{self, NewStore, Page};

impl Services {
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub async fn create_data_store(&self, req: NewDataStoreRequest) -> Result<data_store::Model, AppError> {
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
            .map_err(AppError::Internal)?;
        let new = NewStore {
            name: valid.name,
            kind: valid.kind,
            engine: valid.engine,
            connection: valid.connection,
            password_sealed,
        };
        repo::insert_store(&self.db, new, time::now())
            .await
            .map_err(|e| match e {
                // Two creations racing for one name: the unique index decides.
                AppError::Internal(text) if text.contains("UNIQUE") || text.contains("unique") => {
                    AppError::Conflict("a data store with this name already exists".into())
                }
                other => other,
            })
    }

    pub async fn get_data_store(&self, id: i64) -> Result<data_store::Model, AppError> {
        repo::get_store(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("data store", id))
    }

    /// Connects to the store (on the engine's runtime, through its pool) and reports latency
    /// and server version, or why it cannot be used.
    #[tracing::instrument(skip(self))]
    pub async fn check_data_store(&self, id: i64) -> Result<crate::connectors::CheckReport, AppError> {
        let model = self.get_data_store(id).await?;
        let store = repo::store_from_model(model, &self.cipher)?;
        let pools = self.engine.pools().clone();
        let checked = self
            .engine
            .handle()
            .spawn(async move {
                tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    crate::connectors::check(&store, &pools),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(crate::connectors::ConnectorError::transient(
                        "no answer within 30 s",
                    ))
                })
            })
            .await
            .map_err(|e| AppError::Internal(format!("the store check crashed: {e}")))?;
        checked.map_err(|e| AppError::StoreCheck(e.message))
    }

    pub async fn list_data_stores(
        &self,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<Page<data_store::Model>, AppError> {
        repo::list_stores(&self.db, limit, before_id).await
    }
}
