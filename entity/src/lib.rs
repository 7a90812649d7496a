//! SeaORM entities of Sluice's metadata database: one module per table.
//!
//! Data stores, flow inputs and flows are written once and never updated; only the Persister
//! actor updates `flow_output` rows. JSON columns hold the values that the original
//! specification says are not tables of their own (progress, logs, errors, tasks).

pub mod data_store;
pub mod flow;
pub mod flow_input;
pub mod flow_output;

pub mod prelude {
    pub use super::data_store::Entity as DataStore;
    pub use super::flow::Entity as Flow;
    pub use super::flow_input::Entity as FlowInput;
    pub use super::flow_output::Entity as FlowOutput;
}
