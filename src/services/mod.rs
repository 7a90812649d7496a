//! The business layer: create and read data stores and flow inputs (validating and planning),
//! start, read and cancel flows. Knows nothing of HTTP; returns `AppError`.

pub mod data_stores;
pub mod flow_inputs;
pub mod flows;
pub mod observe;

use std::sync::Arc;

use actix::Addr;
use sea_orm::DatabaseConnection;

use crate::actors::{FlowSupervisor, Persister};
use crate::config::Settings;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::secrets::Cipher;

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
}
