//! # Sluice
//!
//! A service that runs data flows: ingest tables and files, run a DAG of SQL transforms,
//! persist the results atomically, and follow every flow live.
//!
//! # Layout
//!
//! The list goes from top to bottom: a module uses only the ones below it. Not yet only:
//! [`domain`] validation reads its limits from [`config`].
//!
//! - [`api`]: HTTP routes and handlers, DTOs, auth, problem+json errors.
//! - [`services`]: the business layer (validate, plan, start and cancel flows).
//! - [`actors`]: FlowSupervisor, FlowActor, TaskActor and the Persister.
//! - [`engine`]: DataFusion sessions on a dedicated runtime, node execution, checkpoints.
//! - [`connectors`]: sources and sinks per store engine, and the errors of both bottom layers
//!   ([`connectors::error`]: connector errors, the wording of DataFusion errors).
//! - [`repo`]: the data layer, repositories over SeaORM (the `entity` and `migration` crates);
//!   used by services and actors.
//! - [`events`]: the live-event hub and the SSE wire types (the Persister feeds it, api reads it).
//! - [`domain`]: the types of the domain and their rules (validation, DAG, progress).
//! - [`cli`]: the client commands of the `sluice` binary (a REST/SSE client of a server).
//! - [`metrics`]: the Prometheus registry (one per application).
//! - [`config`], [`telemetry`], [`error`], [`secrets`], [`startup`] (the composition root).

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
pub mod metrics;
pub mod repo;
pub mod secrets;
pub mod services;
pub mod startup;
pub mod telemetry;
