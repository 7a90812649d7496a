//! Flow inputs: validate against the stores they name, plan the DAG, store.

use std::collections::HashMap;

use entity::flow_input;

use super::Services;
use crate::domain::dag::Dag;
use crate::domain::spec::{FlowInputRequest, FlowInputSpec};
use crate::domain::store::DataStore;
use crate::domain::time;
use crate::domain::validate::{validate_flow_input, ValidationContext};
use crate::error::AppError;
use crate::repo::{self, Page};

impl Services {
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub async fn create_flow_input(&self, req: FlowInputRequest) -> Result<flow_input::Model, AppError> {
        let (spec, dag) = self.plan_flow_input(req).await?;
        repo::insert_flow_input(&self.db, &spec, &dag, time::now()).await
    }

    /// Validates and plans `req` exactly as a create does, storing nothing (the dry run).
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub async fn plan_flow_input(&self, req: FlowInputRequest) -> Result<(FlowInputSpec, Dag), AppError> {
        let mut ids: Vec<i64> = req.source_store_ids.clone();
        ids.push(req.target_store_id);
        ids.extend(req.sources.iter().map(|s| s.store_id));
        ids.sort_unstable();
        ids.dedup();
        // Validation needs what the stores are, not their secrets.
        let stores: HashMap<i64, DataStore> = repo::stores_by_ids(&self.db, &ids)
            .await?
            .into_iter()
            .map(|mut m| {
                m.password_sealed = None;
                repo::store_from_model(m, &self.cipher).map(|s| (s.id, s))
            })
            .collect::<Result<_, _>>()?;
        let ctx = ValidationContext {
            stores: &stores,
            limits: &self.settings.limits,
            engine: &self.settings.engine,
        };
        validate_flow_input(req, &ctx).map_err(AppError::Invalid)
    }

    pub async fn get_flow_input(&self, id: i64) -> Result<flow_input::Model, AppError> {
        repo::get_flow_input(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("flow input", id))
    }

    pub async fn list_flow_inputs(
        &self,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<Page<flow_input::Model>, AppError> {
        repo::list_flow_inputs(&self.db, limit, before_id).await
    }
}
