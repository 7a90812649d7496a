//! The actors: a FlowSupervisor admits and supervises flows; one FlowActor per running flow
//! owns its DAG state; one TaskActor per node run does the work on the engine runtime; the
//! Persister is the single writer of flow outputs. Actors know nothing of HTTP or SQL
//! dialects: they schedule, message and supervise. Their decisions live in plain structs with
//! unit tests (`admission` for the supervisor, `flow_state` for a flow's run, `pictures` for
//! the Persister's coalescing, `sweep::is_stale` for work directories); a flow's plan comes
//! through the `PlanLoader` the supervisor is given (implemented by the services). With
//! PostgreSQL metadata, several instances share the flows through `leases`.

pub mod admission;
pub mod errors;
pub mod flow;
pub mod flow_state;
pub mod leases;
pub mod messages;
pub mod persister;
pub mod pictures;
pub mod plan_loader;
pub mod supervisor;
pub mod sweep;
pub mod task;

pub use messages::FlowPlan;
pub use persister::Persister;
pub use plan_loader::PlanLoader;
pub use supervisor::FlowSupervisor;
