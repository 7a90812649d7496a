//! The actors: a FlowSupervisor admits and supervises flows; one FlowActor per running flow
//! owns its DAG state; one TaskActor per node run does the work on the engine runtime; the
//! Persister is the single writer of flow outputs. Actors know nothing of HTTP or SQL
//! dialects: they schedule, message and supervise.

pub mod errors;
pub mod flow;
pub mod messages;
pub mod persister;
pub mod supervisor;
pub mod task;

pub use messages::FlowPlan;
pub use persister::Persister;
pub use supervisor::FlowSupervisor;
