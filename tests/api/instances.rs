//! Several instances on one PostgreSQL metadata database and one shared data directory: flows
//! are claimed by whichever instance has room (in order), an instance killed mid-flow loses its
//! leases and another resumes its flows from their checkpoints, exactly once; any instance
//! answers for any flow (GET, live events, cancel); a paused owner whose lease was taken never
//! publishes a second time. Each instance is a real `sluice` process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::events::Stream;
use crate::helpers::*;
use crate::process::ServerProcess;

const ROWS: i64 = 20_000;

/// A temp directory with a shared data directory, the files root, and one fresh PostgreSQL
/// metadata database for all the instances of a test.
struct Cluster {
    _temp: tempfile::TempDir,
    data: PathBuf,
    files: PathBuf,
    root: PathBuf,
    metadata_url: String,
}

impl Cluster {
    async fn new() -> Cluster {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let (data, files) = (root.join("data"), root.join("files"));
        std::fs::create_dir_all(files.join("in")).unwrap();
        std::fs::create_dir_all(files.join("out")).unwrap();
        let mut csv = String::from("n\n");
        for i in 1..=ROWS {
            csv.push_str(&format!("{i}\n"));
        }
        std::fs::write(files.join("in/n.csv"), csv).unwrap();
        let server = pg_url();
        let name = format!("sluice_meta_{}", uuid::Uuid::new_v4().simple());
        pg_admin(&server, &format!("CREATE DATABASE \"{name}\"")).await;
        let mut url = reqwest::Url::parse(&server).unwrap();
        url.set_path(&format!("/{name}"));
        Cluster {
            _temp: temp,
            data,
            files,
            root,
            metadata_url: url.to_string(),
        }
    }

    /// Starts instance `id` (its log in `<id>.log`) with `extra` settings.
    async fn start(&self, id: &str, extra: &[(&str, &str)]) -> ServerProcess {
        let mut env = vec![
            ("SLUICE__DATABASE__URL", self.metadata_url.as_str()),
            ("SLUICE__INSTANCE_ID", id),
            // Long enough that a busy machine (two debug servers per test, tests in parallel)
            // never lets a lease lapse by itself; takeovers come from kills and pauses.
            ("SLUICE__ENGINE__LEASE_TIMEOUT_S", "6"),
            // 20 batches per node, so that `sluice_sleep` makes a flow last.
            ("SLUICE__ENGINE__BATCH_SIZE", "1000"),
        ];
        env.extend_from_slice(extra);
        ServerProcess::start(&self.data, &self.files, &self.log(id), &env).await
    }

    fn log(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.log"))
    }
}

/// A flow of two slow nodes (`slow1`, materialized: read twice; each sleeps `sleep_ms.0` and
/// `sleep_ms.1` per batch of 1000 rows) appending to its own SQLite file `out/w{k}.db`, so that a
/// second publish would show as a second copy of the rows.
async fn slow_input(api: &Api, k: usize, sleep_ms: (u32, u32)) -> i64 {
    let (sleep1, sleep2) = sleep_ms;
    let src = api
        .create_store(json!({"name": format!("raw{k}"), "kind": "file", "engine": "csv", "connection": {"type": "file", "path": api.files.join("in")}}))
        .await;
    let db = api
        .create_store(json!({"name": format!("w{k}"), "kind": "relational_db", "engine": "sqlite", "connection": {"type": "file", "path": api.files.join(format!("out/w{k}.db"))}}))
        .await;
    api.create_input(json!({
        "name": format!("slow{k}"), "source_store_ids": [src], "target_store_id": db,
        "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
        "transforms": [
            {"name": "slow1", "sql": format!("SELECT n FROM numbers WHERE sluice_sleep({sleep1})")},
            {"name": "slow2", "sql": format!("SELECT n * {k} AS m FROM slow1 WHERE sluice_sleep({sleep2})")}
        ],
        "outputs": [
            {"node": "slow2", "table": "appended", "mode": "append"},
            {"node": "slow1", "table": "copy", "mode": "replace"}
        ]
    }))
    .await
}

/// The target of flow `k` holds exactly one copy of its rows.
async fn assert_published_once(files: &Path, k: usize) {
    let sum: i64 = (1..=ROWS).sum();
    let db = files.join(format!("out/w{k}.db"));
    let appended = sqlite_rows(&db, "SELECT count(*), sum(m) FROM appended").await;
    assert_eq!(
        appended,
        vec![vec![json!(ROWS), json!(sum * k as i64)]],
        "flow {k}: exactly one copy appended"
    );
    let copy = sqlite_rows(&db, "SELECT count(*), sum(n) FROM copy").await;
    assert_eq!(
        copy,
        vec![vec![json!(ROWS), json!(sum)]],
        "flow {k}: the replaced copy"
    );
}

fn log_lines(flow: &Value) -> String {
    flow["output"]["logs"]["lines"].to_string()
}

/// The instance a flow's log says it runs (or last ran) on.
fn ran_on(flow: &Value) -> Vec<String> {
    flow["output"]["logs"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter_map(|l| l.split("running on instance ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn flows_started_through_one_instance_are_claimed_by_both_in_order() {
    let cluster = Cluster::new().await;
    let one = [("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1")];
    let a = cluster.start("node-a", &one).await;
    let b = cluster.start("node-b", &one).await;
    let mut flows = Vec::new();
    for k in 1..=4 {
        let input = slow_input(&a, k, (20, 50)).await;
        flows.push((k, a.start_flow(input).await));
    }
    let mut instances = Vec::new();
    for (k, id) in &flows {
        // Either instance answers for every flow.
        let done = b.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "flow {id}: {done:#}");
        assert_eq!(a.flow(*id).await["output"]["state"], "COMPLETED");
        assert_published_once(&cluster.files, *k).await;
        let on = ran_on(&done);
        assert_eq!(on.len(), 1, "one instance ran flow {id}: {on:?}");
        instances.push(on[0].clone());
    }
    assert!(
        instances.iter().any(|i| i == "node-a") && instances.iter().any(|i| i == "node-b"),
        "both instances ran flows: {instances:?}"
    );
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_claim_takes_the_oldest_unclaimed_flow_and_two_claims_never_take_one() {
    use sluice::repo::leases;
    let cluster = Cluster::new().await;
    let a = cluster
        .start("node-a", &[("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1")])
        .await;
    let mut flows = Vec::new();
    for k in 1..=4 {
        // The first lasts (8 s or more) so that node-a stays full while the test claims.
        let sleep = if k == 1 { (20, 400) } else { (20, 20) };
        let input = slow_input(&a, k, sleep).await;
        flows.push(a.start_flow(input).await);
    }
    // node-a claimed the first and has no room for more: the rest wait, unclaimed.
    a.wait_flow(flows[0], Duration::from_secs(60), |f| state(f) == "RUNNING")
        .await;
    let pool = sqlx::PgPool::connect(&cluster.metadata_url).await.unwrap();
    let lease = Duration::from_secs(30);
    let first = leases::claim_next(&pool, "probe", lease, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.flow_id, flows[1], "the oldest unclaimed flow");
    assert_eq!((first.previous_owner.clone(), first.was_running), (None, false));
    let (x, y) = tokio::join!(
        leases::claim_next(&pool, "probe-x", lease, &[]),
        leases::claim_next(&pool, "probe-y", lease, &[]),
    );
    let mut two = vec![x.unwrap().unwrap().flow_id, y.unwrap().unwrap().flow_id];
    two.sort();
    assert_eq!(two, vec![flows[2], flows[3]], "two claims at once take two flows");
    assert_eq!(
        leases::claim_next(&pool, "probe-z", lease, &[]).await.unwrap(),
        None,
        "node-a's running flow is not claimable while it renews its lease"
    );
    assert!(!leases::confirm(&pool, "probe", lease, flows[0]).await.unwrap());
    assert!(leases::confirm(&pool, "probe", lease, flows[1]).await.unwrap());
    // Handed back: node-a runs them all, one at a time.
    leases::release(&pool, "probe", &[flows[1]]).await.unwrap();
    leases::release(&pool, "probe-x", &[flows[2], flows[3]])
        .await
        .unwrap();
    leases::release(&pool, "probe-y", &[flows[2], flows[3]])
        .await
        .unwrap();
    for (k, id) in flows.iter().enumerate() {
        let done = a.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "{done:#}");
        assert_published_once(&cluster.files, k + 1).await;
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn kill_9_of_one_instance_the_other_resumes_its_flows_exactly_once() {
    let cluster = Cluster::new().await;
    let mut a = cluster.start("node-a", &[]).await;
    let mut flows = Vec::new();
    for k in 1..=2 {
        let input = slow_input(&a, k, (50, 400)).await;
        flows.push((k, a.start_flow(input).await));
    }
    for (_, id) in &flows {
        a.wait_flow(*id, Duration::from_secs(60), |f| state(f) == "RUNNING")
            .await;
    }
    // Both run on node-a; kill it once flow 1 has checkpointed slow1 and is still running.
    let b = cluster.start("node-b", &[]).await;
    let first = a
        .wait_flow(flows[0].1, Duration::from_secs(120), |f| {
            task(f, "slow1")["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(state(&first), "RUNNING", "{first:#}");
    assert_eq!(ran_on(&first), vec!["node-a"]);
    a.kill9();
    let killed = Instant::now();
    for (k, id) in &flows {
        let done = b.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "flow {id}: {done:#}");
        assert_published_once(&cluster.files, *k).await;
    }
    let first = b.flow(flows[0].1).await;
    let logs = log_lines(&first);
    assert!(
        logs.contains("resumed on instance node-b after instance node-a stopped renewing its lease"),
        "{logs}"
    );
    assert_eq!(ran_on(&first), vec!["node-a", "node-b"]);
    assert_eq!(
        task(&first, "slow1")["attempts"],
        1,
        "its checkpoint is reused: {first:#}"
    );
    eprintln!("both flows completed {:?} after the kill", killed.elapsed());
    let metrics = http_client()
        .get(format!("{}/metrics", b.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |event: &str| -> u64 {
        let series = format!("sluice_leases_total{{event=\"{event}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series}in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(count("taken_over"), 2, "node-b took both flows over");
    assert_eq!(count("claimed"), 2);
    assert_eq!(count("lost"), 0);
    // Nothing of either run is left behind in the shared data directory.
    for (_, id) in &flows {
        wait_until_gone(&cluster.data.join(format!("work/flow-{id}"))).await;
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn the_other_instance_streams_a_flows_progress_and_cancels_it() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let input = slow_input(&a, 1, (200, 200)).await;
    let flow = a.start_flow(input).await;
    a.wait_flow(flow, Duration::from_secs(60), |f| {
        task(f, "slow1")["state"] == "RUNNING"
    })
    .await;
    // node-b starts after node-a has claimed the flow: node-a owns it.
    let b = cluster.start("node-b", &[]).await;
    let mut stream = Stream::open(&b, flow).await;
    let first = stream.next(Duration::from_secs(30)).await.expect("a snapshot");
    assert_eq!(first.name, "snapshot");
    assert_eq!(first.data["output"]["state"], "RUNNING");
    // Live progress of a flow that runs on node-a, read by node-b from the database.
    let seen = stream
        .until(Duration::from_secs(60), |e| e.name == "progress")
        .await;
    assert!(seen.iter().all(|e| e.name != "end"), "{seen:#?}");

    let asked = Instant::now();
    let reply = b
        .post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
    assert_eq!(reply.body["id"], flow);
    let rest = stream.collect(Duration::from_secs(60)).await;
    let end = rest.last().expect("an end event");
    assert_eq!(end.name, "end", "{rest:#?}");
    assert_eq!(end.data["state"], "CANCELLED");
    let took = asked.elapsed();
    eprintln!("cancel through node-b ended the flow on node-a in {took:?}");
    // Within a second on a quiet machine; the bound only catches a cancel that never arrives.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let done = a.flow(flow).await;
    assert_eq!(state(&done), "CANCELLED");
    assert_eq!(ran_on(&done), vec!["node-a"], "node-b never ran it");
    let target = cluster.files.join("out/w1.db");
    if target.exists() {
        let tables = sqlite_rows(
            &target,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('appended', 'copy')",
        )
        .await;
        assert_eq!(tables, vec![vec![json!(0)]], "a cancelled flow publishes nothing");
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_lease_taken_while_its_owner_is_paused_never_leads_to_two_publishes() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    // Paused while it computes slow1 (8 s), before it has opened anything in the target: a
    // paused process holding a write lock on an SQLite target would stop any new owner too.
    let input = slow_input(&a, 1, (400, 50)).await;
    let flow = a.start_flow(input).await;
    let b = cluster.start("node-b", &[]).await;
    let running = a
        .wait_flow(flow, Duration::from_secs(60), |f| {
            task(f, "slow1")["state"] == "RUNNING"
        })
        .await;
    assert_eq!(ran_on(&running), vec!["node-a"]);
    a.pause(true);
    // node-b takes the flow over once node-a's lease runs out, and finishes it.
    let done = b.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert!(
        log_lines(&done)
            .contains("resumed on instance node-b after instance node-a stopped renewing its lease"),
        "{done:#}"
    );
    // node-a wakes up with work it believes is its own: it must find its lease gone.
    a.pause(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(cluster.log("node-a"))
        .unwrap_or_default()
        .contains("no longer holds the flow's lease")
    {
        assert!(
            Instant::now() < deadline,
            "node-a never noticed its lease was taken:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give node-a every chance to publish (it must not), then look.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_published_once(&cluster.files, 1).await;
    let after = b.flow(flow).await;
    assert_eq!(
        state(&after),
        "COMPLETED",
        "node-a wrote nothing over node-b's end: {after:#}"
    );
    assert_eq!(after["output"]["finished_utc"], done["output"]["finished_utc"]);
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn flows_of_an_incremental_input_run_one_at_a_time_across_instances() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let b = cluster.start("node-b", &[]).await;
    let source = cluster.files.join("in/items.db");
    seed_sqlite(
        &source,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER);
         INSERT INTO items VALUES (1, 1), (2, 2), (3, 3);",
    )
    .await;
    let src = a
        .create_store(json!({"name": "items", "kind": "relational_db", "engine": "sqlite", "connection": {"type": "file", "path": source}}))
        .await;
    let out = a
        .create_store(json!({"name": "inc", "kind": "relational_db", "engine": "sqlite", "connection": {"type": "file", "path": cluster.files.join("out/inc.db")}}))
        .await;
    let input = a
        .create_input(json!({
            "name": "incremental", "source_store_ids": [src], "target_store_id": out,
            "sources": [{"name": "items", "store_id": src, "table": "items", "incremental": {"cursor": "version"}}],
            "transforms": [{"name": "slow", "sql": "SELECT id, version FROM items WHERE sluice_sleep(300)"}],
            "outputs": [{"node": "slow", "table": "seen", "mode": "append"}]
        }))
        .await;
    // Both instances have room; the flows still run one after another, in order, each from
    // where the one before it left the cursor.
    let mut flows = Vec::new();
    for via in [&a, &b, &a] {
        flows.push(via.start_flow(input).await);
    }
    let mut spans = Vec::new();
    for id in &flows {
        let done = a.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "{done:#}");
        let at =
            |key: &str| chrono::DateTime::parse_from_rfc3339(done["output"][key].as_str().unwrap()).unwrap();
        spans.push((at("started_utc"), at("finished_utc")));
    }
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "a flow started before the one before it ended: {spans:?}"
        );
    }
    let seen = sqlite_rows(
        &cluster.files.join("out/inc.db"),
        "SELECT count(*), count(DISTINCT id) FROM seen",
    )
    .await;
    assert_eq!(seen, vec![vec![json!(3), json!(3)]], "each row appended once");
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_second_process_with_the_same_instance_id_refuses_to_start() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("SLUICE__SERVER__PORT", "0")
        .env("SLUICE__DATA_DIR", &cluster.data)
        .env("SLUICE__FILES__ALLOWED_ROOTS", &cluster.files)
        .env("SLUICE__DATABASE__URL", &cluster.metadata_url)
        .env("SLUICE__INSTANCE_ID", "node-a")
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("another Sluice instance named node-a is running on this metadata database"),
        "{text}"
    );
    // The first one is unharmed, and a second one with its own name starts.
    a.get("/flows").await.expect(200);
    let b = cluster.start("node-b", &[]).await;
    b.get("/flows").await.expect(200);
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn an_instance_that_cannot_renew_for_a_whole_lease_stops_its_flows_and_takes_them_back() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let input = slow_input(&a, 1, (50, 400)).await;
    let flow = a.start_flow(input).await;
    a.wait_flow(flow, Duration::from_secs(120), |f| {
        task(f, "slow1")["state"] == "COMPLETED"
    })
    .await;
    // The metadata database shuts node-a out (it cannot even reconnect) for longer than a lease.
    let name = cluster.metadata_url.rsplit('/').next().unwrap().to_string();
    let admin = pg_url();
    pg_admin(
        &admin,
        &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"),
    )
    .await;
    pg_admin(
        &admin,
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a
        .log_text()
        .contains("its lease could not be renewed for a whole lease")
    {
        assert!(
            Instant::now() < deadline,
            "node-a kept running without its lease:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg_admin(
        &admin,
        &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"),
    )
    .await;
    // Back in reach: nobody else took the flow, so node-a claims it again and finishes it,
    // from slow1's checkpoint, publishing once.
    let done = a.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_published_once(&cluster.files, 1).await;
    assert_eq!(
        task(&done, "slow1")["attempts"],
        1,
        "its checkpoint is reused: {done:#}"
    );
    let logs = log_lines(&done);
    assert!(
        logs.contains("resumed on instance node-a after it could not renew its lease"),
        "{logs}"
    );
}
