//! The business layer: create and read data stores and flow inputs (validating and planning),
//! start, read and cancel flows. Knows nothing of HTTP; returns `AppError`.

pub mod data_stores;
pub mod flow_inputs;
pub mod flows;
pub mod repo;

use std::sync::Arc;

use actix::Addr;
use sea_orm::DatabaseConnection;

use crate::actors::{FlowSupervisor, Persister};
use crate::config::Settings;
use crate::secrets::Cipher;

/// What the services need; cloned into every HTTP worker.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub cipher: Cipher,
    pub supervisor: Addr<FlowSupervisor>,
    pub persister: Addr<Persister>,
}
