//! `spawn_app()` and typed request helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice::config::Settings;
use sluice::startup::Application;

/// Talks to a server: its address, an HTTP client, and the directories it uses.
pub struct Api {
    pub address: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub files: PathBuf,
}

/// A running server (in this process, on its own thread and actix System) with its own data
/// directory and a directory of test files (the only allowed root).
pub struct TestApp {
    api: Api,
    handle: Option<ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Options for `spawn_app_with`.
#[derive(Default)]
pub struct AppOptions {
    /// Extra `SLUICE__...` settings.
    pub env: Vec<(String, String)>,
    /// Reuse this data directory and files directory (to restart a server on the same state).
    pub dirs: Option<(PathBuf, PathBuf)>,
}

impl AppOptions {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    init_logging();
    let (temp, data_dir, files) = match options.dirs {
        Some((data, files)) => (None, data, files),
        None => {
            let temp = tempfile::tempdir().expect("temp dir");
            let data = temp.path().join("data");
            let files = temp.path().join("files");
            std::fs::create_dir_all(&files).expect("files dir");
            (Some(temp), data, files)
        }
    };
    let mut env = vec![
        ("SLUICE__SERVER__PORT".to_string(), "0".to_string()),
        ("SLUICE__SERVER__WORKERS".to_string(), "2".to_string()),
        ("SLUICE__DATA_DIR".to_string(), data_dir.display().to_string()),
        (
            "SLUICE__FILES__ALLOWED_ROOTS".to_string(),
            files.display().to_string(),
        ),
        (
            "SLUICE__ENGINE__PERSIST_INTERVAL_MS".to_string(),
            "50".to_string(),
        ),
        ("SLUICE__ENGINE__THREADS".to_string(), "2".to_string()),
    ];
    env.extend(options.env);
    let settings = Settings::load_with(None, env).expect("test settings");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match Application::build(settings).await {
                Ok(app) => {
                    let _ = tx.send(Ok((app.port(), app.handle())));
                    let _ = app.run_until_stopped().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
    });
    let (port, handle) = rx.await.expect("server thread").expect("server starts");
    TestApp {
        api: Api {
            address: format!("http://127.0.0.1:{port}"),
            client: http_client(),
            data_dir,
            files,
        },
        handle: Some(handle),
        thread: Some(thread),
        _temp: temp,
    }
}

fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("SLUICE_TEST_LOG").is_ok() {
            let settings = Settings::load_with(None, Vec::new()).expect("settings");
            let _ = sluice::telemetry::init(&settings.telemetry);
        }
    });
}

/// A response: status and JSON body (or the text as a JSON string when it is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn id(&self) -> i64 {
        self.body["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {}: {}", self.status, self.body))
    }

    /// The `errors[].path` values of a problem.
    pub fn error_paths(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["path"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {:#}",
            self.body
        );
        self
    }
}

impl Api {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1.0{path}", self.address)
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::reply(
            self.client
                .post(self.api(path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        let req = self
            .client
            .post(self.api(path))
            .header("content-type", "application/json")
            .body(body);
        Self::reply(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::reply(self.client.get(self.api(path)).send().await.expect("request")).await
    }

    pub async fn create_store(&self, body: Value) -> i64 {
        self.post("/data-stores", &body).await.expect(201).id()
    }

    /// A CSV file store over `dir` (relative to the files root).
    pub async fn csv_store(&self, name: &str, dir: &str) -> i64 {
        let path = self.files.join(dir);
        std::fs::create_dir_all(&path).expect("store dir");
        self.create_store(json!({"name": name, "kind": "file", "engine": "csv", "connection": {"type": "file", "path": path}})).await
    }

    /// A SQLite store at `file` (relative to the files root).
    pub async fn sqlite_store(&self, name: &str, file: &str) -> i64 {
        let path = self.files.join(file);
        self.create_store(json!({"name": name, "kind": "relational_db", "engine": "sqlite", "connection": {"type": "file", "path": path}})).await
    }

    /// A Parquet dataset store over `dir` (relative to the files root).
    pub async fn parquet_store(&self, name: &str, dir: &str) -> i64 {
        let path = self.files.join(dir);
        self.create_store(json!({"name": name, "kind": "columnar_db", "engine": "parquet", "connection": {"type": "file", "path": path}})).await
    }

    pub async fn create_input(&self, body: Value) -> i64 {
        self.post("/flow-inputs", &body).await.expect(201).id()
    }

    pub async fn start_flow(&self, input_id: i64) -> i64 {
        self.post("/flows", &json!({"flow_input_id": input_id}))
            .await
            .expect(202)
            .id()
    }

    pub async fn flow(&self, id: i64) -> Value {
        self.get(&format!("/flows/{id}")).await.expect(200).body
    }

    /// Polls the flow until `done` holds for it, or panics after `timeout`.
    pub async fn wait_flow(&self, id: i64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let flow = self.flow(id).await;
            if done(&flow) {
                return flow;
            }
            if Instant::now() > deadline {
                panic!("flow {id} did not reach the expected condition in {timeout:?}: {flow:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a final state (generous deadline: it only catches hangs).
    pub async fn wait_final(&self, id: i64) -> Value {
        self.wait_flow(id, Duration::from_secs(120), |f| is_final(state(f)))
            .await
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.files.join(rel)
    }

    pub fn write_file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.files.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, contents).expect("write");
        p
    }
}

impl TestApp {
    /// Stops the server gracefully and waits for it; the data directory stays.
    pub async fn stop(mut self) -> (PathBuf, PathBuf, Option<tempfile::TempDir>) {
        if let Some(h) = self.handle.take() {
            h.stop(true).await;
        }
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join())
                .await
                .expect("join")
                .expect("server thread");
        }
        (self.data_dir.clone(), self.files.clone(), self._temp.take())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Sends the stop command at once; the thread ends on its own.
            drop(h.stop(false));
        }
    }
}

pub fn state(flow: &Value) -> &str {
    flow["output"]["state"].as_str().unwrap_or_default()
}

pub fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "FAILED" | "CANCELLED")
}

/// The task named `name` of a flow.
pub fn task<'a>(flow: &'a Value, name: &str) -> &'a Value {
    flow["output"]["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in {flow:#}"))
}

/// Every row of a SQLite table as JSON arrays, ordered by the given SQL clause.
pub async fn sqlite_rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    use sqlx::{Connection, Row, TypeInfo, ValueRef};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open sqlite");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut conn)
        .await
        .expect("query");
    rows.iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| {
                    let raw = r.try_get_raw(i).expect("cell");
                    if raw.is_null() {
                        return Value::Null;
                    }
                    match raw.type_info().name() {
                        "INTEGER" => json!(r.get::<i64, _>(i)),
                        "REAL" => json!(r.get::<f64, _>(i)),
                        _ => json!(r.get::<String, _>(i)),
                    }
                })
                .collect()
        })
        .collect()
}

/// Reads a Parquet file or dataset directory and returns its rows as JSON objects, by running
/// `sql` over it as table `t` in DataFusion.
pub async fn parquet_rows(path: &Path, sql: &str) -> Vec<Value> {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet("t", path.to_string_lossy().as_ref(), Default::default())
        .await
        .expect("register parquet");
    let batches = ctx.sql(sql).await.expect("sql").collect().await.expect("collect");
    let mut out = Vec::new();
    for b in batches {
        let mut buf = Vec::new();
        let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
        w.write(&b).expect("json");
        w.finish().expect("json");
        if let Value::Array(rows) = serde_json::from_slice(&buf).unwrap_or(Value::Array(vec![])) {
            out.extend(rows);
        }
    }
    out
}

/// Waits until `dir` is removed (a flow's work directory goes right after its final state is
/// written); panics after a few seconds.
pub async fn wait_until_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "work directory left behind: {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
