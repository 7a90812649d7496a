//! Flow inputs: validate against the stores they name (within the configured limits), plan the
//! DAG, store; read them back as [`FlowInputRecord`]s.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::flow_input;

use super::{Page, Services};
use crate::config::Settings;
use crate::domain::dag::Dag;
use crate::domain::spec::{FlowInputRequest, FlowInputSpec};
use crate::domain::store::DataStore;
use crate::domain::time;
use crate::domain::validate::{validate_flow_input, Limits, ValidationContext};
use crate::error::AppError;
use crate::repo::{self, RepoError};

/// A stored flow input, decoded: its spec and its planned DAG.
pub struct FlowInputRecord {
    pub id: i64,
    pub created_utc: DateTime<Utc>,
    pub spec: FlowInputSpec,
    pub dag: Dag,
}

impl FlowInputRecord {
    fn from_model(m: flow_input::Model) -> Result<Self, RepoError> {
        let (spec, dag) = repo::flow_input_spec(&m)?;
        Ok(FlowInputRecord {
            id: m.id,
            created_utc: m.created_utc,
            spec,
            dag,
        })
    }
}

/// The limits a flow input is validated against, as configured.
fn validation_limits(settings: &Settings) -> Limits {
    Limits {
        max_sources: settings.limits.max_sources,
        max_transforms: settings.limits.max_transforms,
        max_sql_length: settings.limits.max_sql_length,
        max_checks: settings.limits.max_checks,
        default_parallel_tasks: settings.engine.max_parallel_tasks,
        memory_limit_mb: settings.engine.memory_limit_mb,
    }
}

impl Services {
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub async fn create_flow_input(&self, req: FlowInputRequest) -> Result<FlowInputRecord, AppError> {
        let (spec, dag) = self.plan_flow_input(req).await?;
        let model = repo::insert_flow_input(&self.db, &spec, &dag, time::now()).await?;
        Ok(FlowInputRecord::from_model(model)?)
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
            limits: validation_limits(&self.settings),
        };
        validate_flow_input(req, &ctx).map_err(AppError::Invalid)
    }

    pub async fn get_flow_input(&self, id: i64) -> Result<FlowInputRecord, AppError> {
        let model = repo::get_flow_input(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("flow input", id))?;
        Ok(FlowInputRecord::from_model(model)?)
    }

    pub async fn list_flow_inputs(
        &self,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<Page<FlowInputRecord>, AppError> {
        let page = repo::list_flow_inputs(&self.db, limit, before_id).await?;
        Ok(page.try_map(FlowInputRecord::from_model)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_configuration() {
        let mut settings = Settings::load_with(None, Vec::new()).unwrap();
        settings.limits.max_sources = 3;
        settings.engine.memory_limit_mb = 64;
        let limits = validation_limits(&settings);
        assert_eq!(limits.max_sources, 3);
        assert_eq!(limits.memory_limit_mb, 64);
        assert_eq!(limits.max_checks, settings.limits.max_checks);
        assert_eq!(limits.default_parallel_tasks, settings.engine.max_parallel_tasks);
    }
}
