//! Messages between actors, and the plan a FlowActor runs.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::domain::dag::Dag;
use crate::domain::flow::{FlowEvent, FlowPicture, FlowState};
use crate::domain::spec::FlowInputSpec;
use crate::domain::store::DataStore;
use crate::engine::unit::UnitError;

/// Everything a FlowActor needs to run a flow.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    pub flow_id: i64,
    pub output_id: i64,
    pub spec: FlowInputSpec,
    /// The DAG, with its materialization planned.
    pub dag: Dag,
    /// The units the DAG runs as.
    pub run: crate::domain::plan::RunPlan,
    /// The flow's stores by id, passwords opened.
    pub stores: HashMap<i64, DataStore>,
    /// Where each cursor source starts (by source name).
    pub cursor_starts: HashMap<String, crate::domain::cursor::CursorStart>,
}

// ---- to the Persister -------------------------------------------------------------------------

/// Start keeping a flow's picture (and writing it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub flow_id: i64,
    pub picture: FlowPicture,
    /// The picture differs from what followers may have read (a resumed flow's tasks were
    /// reset): they re-read a snapshot. Otherwise the updates that follow tell them enough.
    pub resync: bool,
}

/// Forget a flow's picture without writing it: another instance holds the flow now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Untrack {
    pub flow_id: i64,
}

/// Something happened to a flow; coalesced into the next write.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Record {
    pub flow_id: i64,
    pub event: FlowEvent,
}

/// A task moved rows from or into a store (for the metrics).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RowsMoved {
    pub engine: crate::domain::store::StoreEngine,
    pub direction: crate::metrics::RowsDirection,
    pub rows: u64,
    /// For rows read: the flow input and the source that read them.
    pub source: Option<(String, String)>,
}

/// A state change, written before the reply: the caller may rely on it being durable.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Transition {
    pub flow_id: i64,
    pub state: FlowState,
}

/// The current picture of a tracked flow, if tracked.
#[derive(Message)]
#[rtype(result = "Option<FlowPicture>")]
pub struct GetPicture {
    pub flow_id: i64,
}

/// The state of every flow the Persister holds a picture of (running, or final but not yet
/// stored): what `GetPicture` would answer for each.
#[derive(Message)]
#[rtype(result = "Vec<(i64, FlowState)>")]
pub struct LiveStates;

/// Like `GetPicture`, with the number of the last live update the picture already shows
/// (`events::EventHub::seq`), so a follower can skip older updates.
#[derive(Message)]
#[rtype(result = "Option<(FlowPicture, u64)>")]
pub struct GetLive {
    pub flow_id: i64,
}

/// Write everything pending now (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll;

// ---- to the FlowSupervisor --------------------------------------------------------------------

/// A flow was created READY: run it when a slot is free.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartFlow {
    pub flow_id: i64,
    /// For a flow of an incremental input, the input: no two flows of it run at once.
    pub exclusive_input: Option<i64>,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting; it is CANCELLED now.
    Cancelled,
    /// It is running; the cancel was sent to its FlowActor.
    Sent,
    /// It had already ended in this state.
    AlreadyFinal(FlowState),
    /// No such flow is known to the supervisor (the caller checks the database).
    Unknown,
}

#[derive(Message)]
#[rtype(result = "CancelOutcome")]
pub struct CancelFlow {
    pub flow_id: i64,
}

/// A FlowActor ended its flow in a final state (already written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlowEnded {
    pub flow_id: i64,
    pub state: FlowState,
}

/// A flow's execution crashed (a panic or a broken invariant).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlowCrashed {
    pub flow_id: i64,
    pub cause: CrashCause,
}

/// Why a flow crashed, and how much of it the flow's own (public) lines may show.
#[derive(Debug, Clone)]
pub enum CrashCause {
    /// Task work or the flow's actor panicked: what the code said, shown on the flow as it is
    /// (it names the task; it is what a user reports).
    Panic(String),
    /// Sluice's own machinery failed (the work directory, the metadata database, an actor that
    /// vanished): the text goes to the service log only; the flow says where to look.
    Internal(String),
}

impl CrashCause {
    /// The whole cause, for the service log.
    pub fn log_text(&self) -> &str {
        match self {
            CrashCause::Panic(text) | CrashCause::Internal(text) => text,
        }
    }

    /// What flow `flow_id`'s lines say.
    pub fn public_text(&self, flow_id: i64) -> String {
        match self {
            CrashCause::Panic(text) => text.clone(),
            CrashCause::Internal(_) => crate::domain::flow::internal_error_for_flow(flow_id),
        }
    }
}

/// Find flows a previous process left unfinished and run them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recover;

/// Stop all running flows at a safe point, leaving them resumable (graceful shutdown); replies
/// once they have stopped and their state is written, or after `timeout`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Park {
    pub timeout: std::time::Duration,
}

// ---- to a FlowActor ---------------------------------------------------------------------------

/// Cancel the flow. Replies `Err(state)` when the flow is already ending in `state` (RUNNING
/// when it is being suspended for shutdown), so the cancel has no effect.
#[derive(Message)]
#[rtype(result = "Result<(), FlowState>")]
pub struct Cancel;

/// Stop at a safe point without a final state, so the next start resumes the flow.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Suspend;

/// How a task (one unit of the flow) ended.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    Completed {
        /// The rows of every node of the unit.
        rows: Vec<(String, u64)>,
        elapsed: std::time::Duration,
        /// A check unit's verdict.
        check: Option<crate::engine::check::CheckOutcome>,
    },
    Failed(UnitError),
    Cancelled,
    /// The task's work panicked: a crash of the flow, not a failure of the node.
    Panicked(String),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct TaskDone {
    pub index: usize,
    pub outcome: TaskOutcome,
}

/// Handy alias for what FlowActors share with their tasks.
pub type SharedSession = Arc<crate::engine::FlowSession>;
