//! The business layer: create and read data stores and flow inputs (validating and planning),
//! start, read and cancel flows, and load a flow's plan for the supervisor. Knows nothing of
//! HTTP; returns `AppError`, into which the data layer's `RepoError` turns here. What it hands
//! out is decoded: no caller reads entity JSON.

pub mod data_stores;
pub mod flow_inputs;
pub mod flows;
pub mod observe;
pub mod plan;
mod store_paths;

use std::sync::Arc;

use actix::Addr;
use sea_orm::DatabaseConnection;

use crate::actors::{FlowSupervisor, Persister};
use crate::config::Settings;
use crate::error::AppError;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::repo::RepoError;
use crate::secrets::Cipher;

pub use crate::repo::Page;

/// What the services need; cloned into every HTTP worker.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub cipher: Cipher,
    pub supervisor: Addr<FlowSupervisor>,
    pub persister: Addr<Persister>,
    /// Live followers of flows (the Persister publishes, the events endpoint subscribes).
    pub events: Arc<EventHub>,
    pub metrics: Arc<Metrics>,
    /// The engine: its runtime and the database stores' connection pools.
    pub engine: Arc<crate::engine::Engine>,
    /// With PostgreSQL metadata: this instance's leases (other instances may run flows).
    pub leases: Option<Arc<crate::actors::leases::Leases>>,
}

/// A data-layer failure is internal (500) unless a service decides otherwise first (a name
/// taken, say); its text goes to the service log, the error itself stays the source.
impl From<RepoError> for AppError {
    fn from(err: RepoError) -> Self {
        AppError::Internal {
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_layer_failure_is_internal_and_keeps_its_source() {
        let err = AppError::from(RepoError::Corrupt("output 3 has unknown state NAP".into()));
        assert!(matches!(err, AppError::Internal { .. }));
        assert_eq!(err.to_string(), "internal error: output 3 has unknown state NAP");
        assert!(std::error::Error::source(&err).is_some());
    }
}
