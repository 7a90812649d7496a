//! What the benchmark programs share: a Sluice server in this process, and flows run on it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::Settings;
use sluice::startup::Application;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
}

pub fn start_server(data: &Path, files: &Path, env: &[(&str, &str)]) -> Server {
    let mut vars: Vec<(String, String)> = vec![
        ("SLUICE__SERVER__PORT".into(), "0".into()),
        ("SLUICE__DATA_DIR".into(), data.display().to_string()),
        ("SLUICE__FILES__ALLOWED_ROOTS".into(), files.display().to_string()),
        ("SLUICE__TELEMETRY__LEVEL".into(), "warn".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::load_with(None, vars).expect("settings");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(settings).await.expect("server starts");
            tx.send((app.port(), app.handle())).expect("send");
            let _ = app.run_until_stopped().await;
        })
    });
    let (port, handle) = rx.recv().expect("server");
    Server {
        base: format!("http://127.0.0.1:{port}/api/v1.0"),
        client: reqwest::Client::new(),
        handle,
    }
}

impl Server {
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = resp.status();
        let body: Value = resp.json().await.expect("json");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// Starts a flow and waits for it; returns (wall time from the request, started→finished
    /// as recorded by the flow).
    pub async fn run_flow(&self, input: i64) -> (Duration, Duration) {
        let (wall, recorded, _) = self.run(json!({"flow_input_id": input})).await;
        (wall, recorded)
    }

    /// Starts a flow with this `POST /flows` body and waits for it; returns the two durations of
    /// `run_flow` and the finished flow (`GET /flows/{id}`).
    pub async fn run(&self, body: Value) -> (Duration, Duration, Value) {
        use futures::StreamExt;
        let t0 = Instant::now();
        let id = self.post("/flows", body).await["id"].as_i64().expect("id");
        // The flow's events end after its final state: waiting on them costs the server nothing
        // (polling its state every few milliseconds took CPU from the flow on two cores).
        let mut events = self
            .client
            .get(format!("{}/flows/{id}/events", self.base))
            .send()
            .await
            .expect("events")
            .bytes_stream();
        while let Some(chunk) = events.next().await {
            chunk.expect("events");
        }
        let wall = t0.elapsed();
        let f = self.get(&format!("/flows/{id}")).await;
        match f["output"]["state"].as_str() {
            Some("COMPLETED") => {
                let ts = |k: &str| {
                    chrono::DateTime::parse_from_rfc3339(f["output"][k].as_str().expect(k)).expect("ts")
                };
                let recorded = (ts("finished_utc") - ts("started_utc"))
                    .to_std()
                    .unwrap_or_default();
                (wall, recorded, f)
            }
            _ => panic!("flow ended {}", f["output"]),
        }
    }
}

/// A Python that has the duckdb package (`SLUICE_BENCH_PYTHON`, else python3), for DuckDB's
/// figures beside Sluice's.
pub fn duckdb_python() -> Option<String> {
    let python = std::env::var("SLUICE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    std::process::Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| python)
}
