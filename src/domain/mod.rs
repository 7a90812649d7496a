//! The domain: data stores, flow-input specs, their validation and the DAG plan, flow states.
//! Plain types and pure functions; nothing here knows HTTP, actors, databases or the
//! configuration, and nothing here touches the file system: callers pass limits in and do the
//! IO (see `layers`: `domain` uses no other module of the crate).

pub mod checks;
pub mod contract;
pub mod cursor;
pub mod dag;
pub mod field_error;
pub mod flow;
pub mod names;
pub mod paths;
pub mod plan;
pub mod secret;
pub mod spec;
pub mod sql;
pub mod store;
pub mod time;
pub mod validate;
