//! Integration tests: the real server over HTTP on a random port, with its own data directory,
//! against real SQLite files (and PostgreSQL/MariaDB where a test is about them). One test
//! binary, one module per area.

mod helpers;

mod cancel;
mod cli;
mod concurrency;
mod events;
mod failures;
mod lifecycle;
mod observe;
