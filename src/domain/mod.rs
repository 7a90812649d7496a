//! The domain: data stores, flow-input specs, their validation and the DAG plan, flow states.
//! Plain types and pure functions; nothing here knows HTTP, actors or databases.

pub mod checks;
pub mod contract;
pub mod cursor;
pub mod dag;
pub mod flow;
pub mod names;
pub mod paths;
pub mod plan;
pub mod spec;
pub mod sql;
pub mod store;
pub mod time;
pub mod validate;
