//! Leases on flows, for several instances on one PostgreSQL metadata database. An instance
//! claims the oldest claimable flow (`FOR UPDATE SKIP LOCKED`, so two instances never claim one
//! flow and neither waits for the other), renews the leases of the flows it holds, and gives
//! them up when it stops. Every time is the database's clock (`now()`), so the instances' clocks
//! need not agree. A cancel asked through any instance is recorded on the flow for its owner.
//!
//! A flow is claimable when it is READY or RUNNING and nobody holds a live lease on it (never
//! claimed, or its owner stopped renewing), and, for a flow of an incremental input, no older
//! flow of that input is unfinished (its flows run one at a time, in order).

use std::time::Duration;

use sqlx::PgPool;

use super::RepoError;

/// A flow an instance has just claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub flow_id: i64,
    /// The instance that held the lease before (it stopped renewing it), if any.
    pub previous_owner: Option<String>,
    /// The flow was RUNNING (not READY) when it was claimed.
    pub was_running: bool,
    /// Its input, when the input is incremental.
    pub exclusive_input: Option<i64>,
    /// A cancel was asked for before it was claimed.
    pub cancel_requested: bool,
}

type ClaimRow = (i64, Option<String>, String, i64, bool, bool);

fn claimed((flow_id, previous_owner, state, input, exclusive, cancel_requested): ClaimRow) -> Claimed {
    Claimed {
        flow_id,
        previous_owner,
        was_running: state == "RUNNING",
        exclusive_input: exclusive.then_some(input),
        cancel_requested,
    }
}

/// The claim shared by [`claim_next`] and [`claim_flow`]: `$1` the instance, `$2` the lease in
/// seconds, `$3` the flows it already holds (never claimed again), and `{which}` narrows the
/// candidates.
fn claim_sql(which: &'static str) -> sqlx::AssertSqlSafe<String> {
    // Only literals of this module go into the text; every value is bound.
    sqlx::AssertSqlSafe(format!(
        "WITH c AS (
            SELECT f.id, f.owner AS previous, o.state, f.flow_input_id, f.exclusive_input, f.cancel_requested
            FROM flow f JOIN flow_output o ON o.id = f.flow_output_id
            WHERE o.state IN ('READY', 'RUNNING')
              AND (f.owner IS NULL OR f.owner = $1 OR f.lease_expires_utc IS NULL OR f.lease_expires_utc < now())
              AND NOT (f.id = ANY($3))
              AND (NOT f.exclusive_input OR NOT EXISTS (
                  SELECT 1 FROM flow g JOIN flow_output go ON go.id = g.flow_output_id
                  WHERE g.flow_input_id = f.flow_input_id AND g.exclusive_input AND g.id < f.id
                    AND go.state IN ('READY', 'RUNNING')))
              {which}
            ORDER BY f.id
            LIMIT 1
            FOR UPDATE OF f SKIP LOCKED
        )
        UPDATE flow SET owner = $1, lease_expires_utc = now() + make_interval(secs => $2)
        FROM c WHERE flow.id = c.id
        RETURNING flow.id, c.previous, c.state, c.flow_input_id, c.exclusive_input, c.cancel_requested"
    ))
}

/// Claims the oldest claimable flow for `instance` (holding `held` already), if there is one.
pub async fn claim_next(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
    held: &[i64],
) -> Result<Option<Claimed>, RepoError> {
    let row: Option<ClaimRow> = sqlx::query_as(claim_sql(""))
        .bind(instance)
        .bind(lease.as_secs_f64())
        .bind(held)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(claimed))
}

/// Claims flow `flow_id` for `instance`, if it is claimable now (to cancel a flow that nobody
/// runs).
pub async fn claim_flow(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
    flow_id: i64,
) -> Result<Option<Claimed>, RepoError> {
    let row: Option<ClaimRow> = sqlx::query_as(claim_sql("AND f.id = $4"))
        .bind(instance)
        .bind(lease.as_secs_f64())
        .bind(&[] as &[i64])
        .bind(flow_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(claimed))
}

/// Renews `instance`'s leases on `flows` for `lease` from now; returns the flows it still holds
/// (a flow missing from the answer was claimed by another instance after its lease ran out).
/// An expired lease nobody took is renewed: its owner still holds it.
pub async fn renew(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
    flows: &[i64],
) -> Result<Vec<i64>, RepoError> {
    if flows.is_empty() {
        return Ok(vec![]);
    }
    let held: Vec<(i64,)> = sqlx::query_as(
        "UPDATE flow SET lease_expires_utc = now() + make_interval(secs => $2)
         WHERE owner = $1 AND id = ANY($3)
         RETURNING id",
    )
    .bind(instance)
    .bind(lease.as_secs_f64())
    .bind(flows)
    .fetch_all(pool)
    .await?;
    Ok(held.into_iter().map(|(id,)| id).collect())
}

/// Whether `instance` still holds `flow_id`, renewing its lease for `lease` from now if so:
/// what a flow checks just before it publishes, so that a flow another instance took over
/// never publishes twice. A lease that ran out is still held until another instance claims
/// the flow: the row lock orders this against such a claim, so exactly one of them wins.
pub async fn confirm(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
    flow_id: i64,
) -> Result<bool, RepoError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE flow SET lease_expires_utc = now() + make_interval(secs => $2)
         WHERE id = $3 AND owner = $1
         RETURNING id",
    )
    .bind(instance)
    .bind(lease.as_secs_f64())
    .bind(flow_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Gives up `instance`'s leases on `flows` (it is shutting down, or they were handed back):
/// another instance may claim them at once.
pub async fn release(pool: &PgPool, instance: &str, flows: &[i64]) -> Result<(), RepoError> {
    if flows.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE flow SET owner = NULL, lease_expires_utc = NULL WHERE owner = $1 AND id = ANY($2)")
        .bind(instance)
        .bind(flows)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that a cancel of `flow_id` was asked for. Returns the flow's owner while its lease
/// is live (`None`: nobody runs it, so the caller may claim it and cancel it itself); `Err` only
/// when the database fails.
pub async fn request_cancel(pool: &PgPool, flow_id: i64) -> Result<Option<String>, RepoError> {
    let row: Option<(Option<String>, bool)> = sqlx::query_as(
        "UPDATE flow SET cancel_requested = true WHERE id = $1
         RETURNING owner, coalesce(lease_expires_utc > now(), false)",
    )
    .bind(flow_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(owner, live)| owner.filter(|_| live)))
}

/// Which of `flows` (held by `instance`) have a cancel asked for.
pub async fn cancels_requested(pool: &PgPool, instance: &str, flows: &[i64]) -> Result<Vec<i64>, RepoError> {
    if flows.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM flow WHERE owner = $1 AND cancel_requested AND id = ANY($2)")
            .bind(instance)
            .bind(flows)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The flow's owner while its lease is live.
pub async fn live_owner(pool: &PgPool, flow_id: i64) -> Result<Option<String>, RepoError> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT owner FROM flow WHERE id = $1 AND lease_expires_utc > now()")
            .bind(flow_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(owner,)| owner))
}

/// Holds the name `instance` for this process: a session advisory lock on a connection of its
/// own, kept for the life of the process (the lock goes with the connection when the process
/// dies, even by kill -9). `None` when another live process holds the name already: two
/// instances with one name would take each other's flows for their own.
pub async fn hold_instance_name(
    pool: &PgPool,
    instance: &str,
) -> Result<Option<sqlx::PgConnection>, RepoError> {
    let mut conn = pool.acquire().await?.detach();
    let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext('sluice instance ' || $1))")
        .bind(instance)
        .fetch_one(&mut conn)
        .await?;
    Ok(held.then_some(conn))
}
