//! Integration tests: the real server over HTTP on a random port, with its own data directory,
//! against real SQLite files (and PostgreSQL/MariaDB where a test is about them). One test
//! binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod contract;
mod helpers;
mod process;

mod cancel;
mod checks;
mod cli;
mod concurrency;
mod data_stores;
mod engine;
mod events;
mod example;
mod failures;
mod flow_inputs;
mod flows_api;
mod folders;
mod fuzz;
mod incremental;
mod instances;
mod lifecycle;
mod limits;
mod merge;
mod observe;
mod relational;
mod resilience;
mod retry;
mod security;
mod service;
mod source_queries;
