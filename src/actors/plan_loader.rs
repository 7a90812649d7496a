//! What the FlowSupervisor needs from the business layer, as a trait it is given at start-up:
//! loading a flow's plan (its input, stores with passwords opened, what an earlier run
//! completed, where its cursor sources start), what a flow may have staged in its target, and
//! which flows a previous process left unfinished. `services::plan` implements it; the actors
//! do not depend on the services above them.

use std::collections::HashSet;

use super::errors::LoadError;
use super::messages::FlowPlan;
use crate::connectors::Load;
use crate::domain::flow::FlowPicture;
use crate::domain::store::DataStore;
use crate::repo::RepoError;

/// What a FlowActor is started with.
pub struct LoadedFlow {
    pub plan: FlowPlan,
    pub picture: FlowPicture,
    /// Nodes an earlier run completed (valid checkpoints, staged outputs).
    pub done: HashSet<String>,
    /// Whether the flow ran before (it is being restarted or recovered); a fresh retry is not.
    pub restarted: bool,
    /// Whether followers must re-read a snapshot (see `Track::resync`).
    pub resync: bool,
}

/// What a flow may have left staged in its target store.
pub struct StagedOutputs {
    pub store: DataStore,
    pub loads: Vec<Load>,
}

/// A flow a previous process left READY or RUNNING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    pub flow_id: i64,
    /// Its input, when the input is incremental (its flows run one at a time).
    pub exclusive_input: Option<i64>,
    /// It was RUNNING (not READY).
    pub was_running: bool,
}

/// Loads what the supervisor starts flows with.
#[async_trait::async_trait]
pub trait PlanLoader: Send + Sync {
    /// Flow `flow_id`'s plan and picture (`live`, the Persister's, when it still tracks the
    /// flow; else the stored one); `None` when the flow has already ended.
    async fn load(&self, flow_id: i64, live: Option<FlowPicture>) -> Result<Option<LoadedFlow>, LoadError>;

    /// The picture stored for flow `flow_id`, if the flow exists and it can be read.
    async fn stored_picture(&self, flow_id: i64) -> Option<FlowPicture>;

    /// What flow `flow_id` may have staged in its target; `None` when Sluice can reach nothing
    /// of it (its input or store is gone).
    async fn staged_outputs(&self, flow_id: i64) -> Option<StagedOutputs>;

    /// The flows a previous process left unfinished, oldest first.
    async fn unfinished(&self) -> Result<Vec<Unfinished>, RepoError>;
}
