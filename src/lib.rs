//! # Sluice
//!
//! A service that runs data flows: ingest tables and files, run a DAG of SQL transforms,
//! persist the results atomically, and follow every flow live.
//!
//! # Layout
//!
//! Top to bottom: a module uses only the modules below it, never one beside it or above it.
//! The `layers` test reads every file under `src/` and holds the code to this order.
//!
//! - `main` (the binary) and [`startup`], the composition root: metadata database, actors,
//!   HTTP server. Beside it, [`cli`]: the client commands of the `sluice` binary, a REST/SSE
//!   client of a server that uses only [`domain`] and [`config`].
//! - [`api`]: HTTP routes and handlers, DTOs, auth, problem+json errors. Handlers call
//!   [`services`] (and follow [`events`]); never the actors, the engine, the connectors or the
//!   data layer.
//! - [`services`]: the business layer (validate, plan, start and cancel flows), which turns the
//!   data layer's errors into [`error::AppError`].
//! - [`error`]: [`error::AppError`], the one error type at the service boundary.
//! - [`actors`]: FlowSupervisor, FlowActor, TaskActor and the Persister.
//! - [`engine`]: DataFusion sessions on a dedicated runtime, node execution, checkpoints,
//!   connection pools and what connectors are called with.
//! - [`connectors`]: sources and sinks per store engine, and the errors of both bottom layers
//!   ([`connectors::error`]: connector errors, the wording of DataFusion errors).
//! - [`repo`] and [`events`]: the data layer, repositories over SeaORM (the `entity` and
//!   `migration` crates) with its own [`repo::RepoError`], used by services and actors; the
//!   live-event hub and the SSE wire types (the Persister feeds it, api reads it).
//! - [`metrics`] (the Prometheus registry, one per application) and [`telemetry`] (logging).
//! - [`secrets`] (sealing store passwords, redaction) and [`config`].
//! - [`domain`]: the types of the domain and their rules (validation, DAG, progress, path
//!   rules); pure: limits are passed in, callers do the IO.

// Tests may unwrap: a failed unwrap is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod actors;
pub mod api;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod repo;
pub mod secrets;
pub mod services;
pub mod startup;
pub mod telemetry;
