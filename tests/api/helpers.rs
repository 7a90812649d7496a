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
    if !options.env.iter().any(|(k, _)| k == "SLUICE__DATABASE__URL") {
        if let Some(url) = metadata_url_for(&data_dir).await {
            env.push(("SLUICE__DATABASE__URL".to_string(), url));
        }
    }
    env.push(("SLUICE__INSTANCE_ID".to_string(), instance_id_for(&data_dir)));
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

/// Creates SQLite file `db` (and its directory) if need be and runs `sql` (any number of
/// statements) on it: the seed of a test's source or target database.
pub async fn seed_sqlite(db: &Path, sql: &str) {
    std::fs::create_dir_all(db.parent().expect("a file in a directory")).expect("directory");
    exec_sqlite(&format!("sqlite://{}?mode=rwc", db.display()), db, sql).await;
}

/// Runs `sql` on the SQLite database at `url` (the file `db`).
async fn exec_sqlite(url: &str, db: &Path, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
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

// ---------------------------------------------------------------------------------------------
// PostgreSQL and MySQL/MariaDB: the servers the tests may use, and direct access to them.

/// A PostgreSQL database the tests may create schemas, tables and roles in.
pub const POSTGRES_ENV: &str = "SLUICE_TEST_POSTGRES_URL";
/// A MySQL/MariaDB database the tests may use; tests create databases beside it.
pub const MYSQL_ENV: &str = "SLUICE_TEST_MYSQL_URL";
/// A PostgreSQL server URL: when set, every test server keeps its metadata in a fresh database
/// there instead of SQLite.
pub const METADATA_ENV: &str = "SLUICE_TEST_METADATA_URL";

fn env_url(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

// A test that needs a database server says so with an attribute, so that `cargo test` reports
// it as ignored (with the reason) where the server is not configured, never as passed:
//     #[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
//     #[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
//     #[cfg_attr(not(all(sluice_pg, sluice_mysql)), ignore = "... are not both set")]
// `build.rs` sets `sluice_pg` / `sluice_mysql` when the variable is set at build time (and
// rebuilds when it changes).

/// `SLUICE_TEST_POSTGRES_URL`. Panics without it: a test that calls this carries the
/// `sluice_pg` attribute above, so it only runs (e.g. with `--ignored`) to fail without it.
pub fn pg_url() -> String {
    env_url(POSTGRES_ENV)
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set: this test needs a PostgreSQL database"))
}

/// `SLUICE_TEST_MYSQL_URL`. Panics without it (see `pg_url`).
pub fn mysql_url() -> String {
    env_url(MYSQL_ENV)
        .unwrap_or_else(|| panic!("{MYSQL_ENV} is not set: this test needs a MySQL/MariaDB database"))
}

/// A short random suffix for names that must not collide between tests running at once.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// The instance id of a test server on `data_dir`, the same at every start: with PostgreSQL
/// metadata a restarted server takes its unfinished flows back at once (as an instance with a
/// configured `instance_id` does) instead of after their leases run out. Tests of several
/// instances on one data directory give each its own.
pub fn instance_id_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("test-{:016x}", hasher.finish())
}

/// The file in a data directory that remembers its metadata database, so that a server
/// restarted on the same directory finds the same metadata.
const METADATA_URL_FILE: &str = "test-metadata-url";

/// With `SLUICE_TEST_METADATA_URL` set: the metadata database URL of the server that uses
/// `data_dir` (a fresh `sluice_meta_<random>` database the first time). `None` otherwise.
pub async fn metadata_url_for(data_dir: &Path) -> Option<String> {
    let server = env_url(METADATA_ENV)?;
    let remembered = data_dir.join(METADATA_URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return Some(url.trim().to_string());
    }
    let name = format!("sluice_meta_{}", uuid::Uuid::new_v4().simple());
    pg_admin(&server, &format!("CREATE DATABASE \"{name}\"")).await;
    let mut url = reqwest::Url::parse(&server).unwrap_or_else(|e| panic!("{METADATA_ENV} is not a URL: {e}"));
    url.set_path(&format!("/{name}"));
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(&remembered, url.as_str()).expect("remember the metadata URL");
    Some(url.to_string())
}

/// Runs one statement on the metadata database of the server that uses `data_dir` (SQLite
/// `sluice.db` there, or the PostgreSQL database `metadata_url_for` chose for it): for tests
/// that damage what Sluice stored.
pub async fn metadata_exec(data_dir: &Path, sql: &str) {
    match metadata_url_for(data_dir).await {
        Some(url) => pg_admin(&url, sql).await,
        None => {
            let db = data_dir.join("sluice.db");
            exec_sqlite(&format!("sqlite://{}", db.display()), &db, sql).await;
        }
    }
}

/// Runs one statement on a PostgreSQL server (outside any transaction).
pub async fn pg_admin(url: &str, sql: &str) {
    let mut conn = pg_connect(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub async fn pg_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e}"))
}

pub async fn mysql_connect(url: &str) -> sqlx::MySqlConnection {
    use sqlx::Connection;
    sqlx::MySqlConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to MySQL: {e}"))
}

/// Runs `sql` (one or more statements) with the text protocol and returns every row of the
/// results as text, exactly as the server prints it (`None` for NULL). PostgreSQL prints
/// `bytea` as `\x..`; MySQL's binary values that are not UTF-8 come back as `0x..`.
pub async fn pg_text(conn: &mut sqlx::PgConnection, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter().map(text_cells).collect()
}

pub async fn mysql_text(conn: &mut sqlx::MySqlConnection, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter().map(text_cells).collect()
}

/// The cells of a row fetched with the text protocol. PostgreSQL's text is decoded as `&str`
/// (its `Vec<u8>` decoder expects `\x` hex in text mode), MySQL's as bytes.
fn text_cells<R>(row: &R) -> Vec<Option<String>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database>,
{
    use sqlx::ValueRef;
    let postgres = std::any::type_name::<R::Database>().contains("Postgres");
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).expect("cell");
            if raw.is_null() {
                return None;
            }
            if postgres {
                let text = <&str as sqlx::Decode<R::Database>>::decode(raw)
                    .unwrap_or_else(|e| panic!("column {i}: {e}"));
                return Some(text.to_string());
            }
            let bytes: Vec<u8> = <Vec<u8> as sqlx::Decode<R::Database>>::decode(raw)
                .unwrap_or_else(|e| panic!("column {i}: {e}"));
            Some(String::from_utf8(bytes).unwrap_or_else(|e| format!("0x{}", hex(e.as_bytes()))))
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parts of a `postgres://` or `mysql://` URL a data store needs.
#[derive(Debug, Clone)]
pub struct DbParts {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub db_name: String,
}

impl DbParts {
    pub fn parse(url: &str) -> DbParts {
        let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("not a database URL: {e}"));
        DbParts {
            host: u.host_str().unwrap_or("127.0.0.1").to_string(),
            port: u
                .port()
                .unwrap_or(if u.scheme() == "mysql" { 3306 } else { 5432 }),
            user: percent_decode(u.username()),
            password: u.password().map(percent_decode),
            db_name: u.path().trim_start_matches('/').to_string(),
        }
    }

    /// The `connection` object of a data store.
    pub fn connection(&self) -> Value {
        let mut c = json!({"type": "db", "host": self.host, "port": self.port, "user": self.user,
                           "db_name": self.db_name});
        if let Some(pw) = &self.password {
            c["password"] = json!(pw);
        }
        c
    }
}

/// Percent-decoding of a URL's user or password.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_pair = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex_pair {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Api {
    /// A PostgreSQL store for the database of `url`.
    pub async fn postgres_store(&self, name: &str, url: &str) -> i64 {
        self.create_store(db_store_body(name, "postgres", url)).await
    }

    /// A MySQL/MariaDB store for the database of `url`.
    pub async fn mysql_store(&self, name: &str, url: &str) -> i64 {
        self.create_store(db_store_body(name, "mysql", url)).await
    }
}

/// The body that creates a `relational_db` store of `engine` for the database of `url`.
pub fn db_store_body(name: &str, engine: &str, url: &str) -> Value {
    json!({"name": name, "kind": "relational_db", "engine": engine,
           "connection": DbParts::parse(url).connection()})
}

/// A schema of its own in the PostgreSQL test database, for one test.
pub struct PgScratch {
    /// The test database's URL.
    pub url: String,
    pub schema: String,
}

impl PgScratch {
    /// Creates the schema `<prefix>_<random>`.
    pub async fn new(url: &str, prefix: &str) -> PgScratch {
        let schema = format!("{prefix}_{}", unique_suffix());
        pg_admin(url, &format!("CREATE SCHEMA {schema}")).await;
        PgScratch {
            url: url.to_string(),
            schema,
        }
    }

    /// `schema.name`.
    pub fn t(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// A connection whose search path starts at the schema, with times shown in UTC.
    pub async fn conn(&self) -> sqlx::PgConnection {
        let mut conn = pg_connect(&self.url).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET search_path = {}, public; SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'",
            self.schema
        )))
        .execute(&mut conn)
        .await
        .expect("session settings");
        conn
    }

    pub async fn exec(&self, sql: &str) {
        let mut conn = self.conn().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Rows as text (see `pg_text`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut conn = self.conn().await;
        pg_text(&mut conn, sql).await
    }

    /// `(column, format_type)` of a table of the schema, in column order.
    pub async fn column_types(&self, table: &str) -> Vec<(String, String)> {
        self.rows(&format!(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = '{}.{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            self.schema
        ))
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
    }

    /// Tables of the schema, sorted.
    pub async fn tables(&self) -> Vec<String> {
        self.rows(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' ORDER BY 1",
            self.schema
        ))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
    }

    /// Staging tables left in the schema.
    pub async fn stage_tables(&self) -> Vec<String> {
        self.tables()
            .await
            .into_iter()
            .filter(|t| t.starts_with("_sluice_stage_"))
            .collect()
    }

    /// Drops the schema (at the end of a test that passed).
    pub async fn drop(self) {
        pg_admin(&self.url, &format!("DROP SCHEMA {} CASCADE", self.schema)).await;
    }
}

/// A database of its own on the MySQL test server, for one test (MySQL's schemas are
/// databases).
pub struct MyScratch {
    /// The URL of this test's database.
    pub url: String,
    pub db: String,
}

impl MyScratch {
    /// Creates the database `<prefix>_<random>` beside the one `url` names.
    pub async fn new(url: &str, prefix: &str) -> MyScratch {
        let db = format!("{prefix}_{}", unique_suffix());
        let mut conn = mysql_connect(url).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )))
        .execute(&mut conn)
        .await
        .expect("create database");
        let mut u = reqwest::Url::parse(url).expect("MySQL URL");
        u.set_path(&format!("/{db}"));
        MyScratch {
            url: u.to_string(),
            db,
        }
    }

    /// A connection to the test's database, with times shown in UTC.
    pub async fn conn(&self) -> sqlx::MySqlConnection {
        let mut conn = mysql_connect(&self.url).await;
        sqlx::raw_sql("SET time_zone = '+00:00'")
            .execute(&mut conn)
            .await
            .expect("session time zone");
        conn
    }

    pub async fn exec(&self, sql: &str) {
        let mut conn = self.conn().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Rows as text (see `mysql_text`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut conn = self.conn().await;
        mysql_text(&mut conn, sql).await
    }

    /// `(column, COLUMN_TYPE)` of a table, in column order.
    pub async fn column_types(&self, table: &str) -> Vec<(String, String)> {
        self.rows(&format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION",
            self.db
        ))
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
    }

    /// Tables of the database, sorted, without the connector's bookkeeping table
    /// `_sluice_published` (published appends, kept on purpose).
    pub async fn tables(&self) -> Vec<String> {
        self.rows(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_NAME <> '_sluice_published' ORDER BY 1",
            self.db
        ))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
    }

    pub async fn stage_tables(&self) -> Vec<String> {
        self.tables()
            .await
            .into_iter()
            .filter(|t| t.starts_with("_sluice_stage_"))
            .collect()
    }

    pub async fn drop(self) {
        self.exec(&format!("DROP DATABASE {}", self.db)).await;
    }
}

/// Every row of a SQLite query as text by storage class: integers and reals as Rust prints
/// them, text as it is, blobs as `\x<hex>` (`None` for NULL).
pub async fn sqlite_text(db: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::{Connection, Row, TypeInfo, ValueRef};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open sqlite");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| {
                    let raw = r.try_get_raw(i).expect("cell");
                    if raw.is_null() {
                        return None;
                    }
                    Some(match raw.type_info().name() {
                        "INTEGER" => r.get::<i64, _>(i).to_string(),
                        "REAL" => r.get::<f64, _>(i).to_string(),
                        "BLOB" => format!("\\x{}", hex(&r.get::<Vec<u8>, _>(i))),
                        _ => r.get::<String, _>(i),
                    })
                })
                .collect()
        })
        .collect()
}

/// `(name, declared type)` of a SQLite table's columns.
pub async fn sqlite_columns(db: &Path, table: &str) -> Vec<(String, String)> {
    sqlite_text(
        db,
        &format!("SELECT name, type FROM pragma_table_info('{table}') ORDER BY cid"),
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect()
}

/// A Parquet dataset (a directory of part files) or file, read with its own Arrow schema (no
/// DataFusion in between, so types are exactly what was written): the schema's fields and
/// every row as text (see `arrow_cell`).
pub fn parquet_table(
    path: &Path,
) -> (
    Vec<(String, datafusion::arrow::datatypes::DataType)>,
    Vec<Vec<Option<String>>>,
) {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .expect("dataset dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    assert!(!files.is_empty(), "no Parquet file in {}", path.display());
    let mut fields = None;
    let mut rows = Vec::new();
    for f in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).expect("open"))
            .expect("parquet");
        let schema: Vec<_> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        match &fields {
            None => fields = Some(schema),
            Some(s) => assert_eq!(s, &schema, "part files disagree on the schema"),
        }
        for batch in builder.build().expect("reader") {
            let batch = batch.expect("batch");
            for i in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| arrow_cell(c, i)).collect());
            }
        }
    }
    (fields.unwrap_or_default(), rows)
}

/// One Arrow cell as text: binaries as `\x<hex>`, times and timestamps with six fractional
/// digits (`2024-02-29 10:34:56.500000Z` when the timestamp has a time zone), everything else
/// as Arrow displays it.
pub fn arrow_cell(array: &datafusion::arrow::array::ArrayRef, row: usize) -> Option<String> {
    use datafusion::arrow::array::*;
    use datafusion::arrow::datatypes::*;
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Binary => format!("\\x{}", hex(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => format!("\\x{}", hex(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => format!("\\x{}", hex(array.as_binary_view().value(row))),
        DataType::Time64(TimeUnit::Microsecond) => array
            .as_primitive::<Time64MicrosecondType>()
            .value_as_time(row)
            .expect("time")
            .format("%H:%M:%S%.6f")
            .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let ts = array
                .as_primitive::<TimestampMicrosecondType>()
                .value_as_datetime(row)
                .expect("timestamp")
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            match tz {
                Some(_) => format!("{ts}Z"),
                None => ts,
            }
        }
        _ => datafusion::arrow::util::display::array_value_to_string(array, row).expect("display"),
    })
}
