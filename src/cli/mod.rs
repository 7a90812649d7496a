//! The client half of the `sluice` binary: commands that talk to a running server over its REST
//! API (`--url`/`SLUICE_URL`, `--token`/`SLUICE_TOKEN`). Output is for people by default and
//! JSON with `--json`. `flows follow` exits 0 when every followed flow COMPLETED, 1 when one
//! FAILED, 2 when one was CANCELLED (and none failed); `run DIR --follow` likewise;
//! `inputs validate` exits 1 when the input has problems; any command exits 3 when a request
//! fails (a flow input with problems included: they are printed with their file and line).

pub mod client;
pub mod folder;
pub mod sse;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

pub use client::{Client, ClientError};

/// Exit code when a request failed.
pub const EXIT_ERROR: u8 = 3;

#[derive(Subcommand, Debug)]
pub enum StoresCommand {
    /// Create a data store from a JSON file (the body of POST /data-stores).
    Create { file: std::path::PathBuf },
    /// Show one data store (never its password).
    Get { id: i64 },
    /// List data stores, newest first.
    List,
}

#[derive(Subcommand, Debug)]
pub enum InputsCommand {
    /// Create a flow input from a JSON file (the body of POST /flow-inputs) or a folder (one
    /// .sql file per transform and a sluice.toml manifest; see docs/folders.md).
    Create { path: std::path::PathBuf },
    /// Check a flow input (a JSON file or a folder) with the server's dry run, storing nothing:
    /// prints every problem with its file and line. Exit 0 valid, 1 not.
    Validate { path: std::path::PathBuf },
    /// Show one flow input with its SQL and DAG.
    Get { id: i64 },
    /// List flow inputs, newest first.
    List,
}

#[derive(Subcommand, Debug)]
pub enum FlowsCommand {
    /// Start a flow of a flow input.
    Start {
        input_id: i64,
        /// Follow it until it ends (exit code as `flows follow`).
        #[arg(long)]
        follow: bool,
    },
    /// Retry a FAILED or CANCELLED flow: a new flow of its input that reuses the checkpoints it
    /// kept and runs only the rest.
    Retry {
        id: i64,
        /// Follow the new flow until it ends (exit code as `flows follow`).
        #[arg(long)]
        follow: bool,
    },
    /// Show a flow: state, progress, tasks, errors and the last log lines.
    Get { id: i64 },
    /// List flows, newest first.
    List {
        /// Only flows in this state (READY, RUNNING, CANCELLED, FAILED, COMPLETED).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Follow flows live until they end: a progress bar per flow and the log lines. Exit code 0
    /// COMPLETED, 1 FAILED, 2 CANCELLED.
    Follow {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Cancel a flow.
    Cancel { id: i64 },
}

/// What to print in.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    fn value(&self, v: &Value) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn read_json(file: &Path) -> Result<Value, ClientError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ClientError::Input(format!("cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Input(format!("{} is not valid JSON: {e}", file.display())))
}

fn report(result: Result<ExitCode, ClientError>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}

pub async fn stores(client: &Client, out: Output, cmd: StoresCommand) -> ExitCode {
    report(
        async {
            match cmd {
                StoresCommand::Create { file } => {
                    let s = client.post("/data-stores", &read_json(&file)?).await?;
                    if out.json {
                        out.value(&s);
                    } else {
                        println!(
                            "created data store {} ({}, {} {})",
                            s["id"],
                            str_of(&s["name"]),
                            str_of(&s["kind"]),
                            str_of(&s["engine"])
                        );
                    }
                }
                StoresCommand::Get { id } => {
                    let s = client.get(&format!("/data-stores/{id}")).await?;
                    if out.json {
                        out.value(&s);
                    } else {
                        print_store(&s);
                    }
                }
                StoresCommand::List => {
                    let page = client.get("/data-stores?limit=500").await?;
                    if out.json {
                        out.value(&page);
                    } else {
                        println!("{:>5}  {:<24} {:<14} {:<8} WHERE", "ID", "NAME", "KIND", "ENGINE");
                        for s in items(&page) {
                            println!(
                                "{:>5}  {:<24} {:<14} {:<8} {}",
                                s["id"].to_string(),
                                str_of(&s["name"]),
                                str_of(&s["kind"]),
                                str_of(&s["engine"]),
                                where_of(&s["connection"])
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

pub async fn inputs(client: &Client, out: Output, cmd: InputsCommand) -> ExitCode {
    report(
        async {
            match cmd {
                InputsCommand::Create { path } => {
                    let input = match InputFiles::read(client, &path).await {
                        Ok(input) => input,
                        Err(e) => return Ok(e.report(false)),
                    };
                    let i = match client.post("/flow-inputs", &input.body).await {
                        Ok(i) => i,
                        Err(e) => return Ok(input.explain(e).report(false)),
                    };
                    if out.json {
                        out.value(&i);
                    } else {
                        println!(
                            "created flow input {} ({}): {} source(s), {} transform(s), {} output(s)",
                            i["id"],
                            str_of(&i["name"]),
                            len(&i["sources"]),
                            len(&i["transforms"]),
                            len(&i["outputs"])
                        );
                        println!("order: {}", names(&i["dag"]["order"]));
                    }
                }
                InputsCommand::Validate { path } => return Ok(validate(client, out, &path).await),
                InputsCommand::Get { id } => {
                    let i = client.get(&format!("/flow-inputs/{id}")).await?;
                    if out.json {
                        out.value(&i);
                    } else {
                        print_input(&i);
                    }
                }
                InputsCommand::List => {
                    let page = client.get("/flow-inputs?limit=500").await?;
                    if out.json {
                        out.value(&page);
                    } else {
                        println!(
                            "{:>5}  {:<28} {:>7} {:>10} {:>7}",
                            "ID", "NAME", "SOURCES", "TRANSFORMS", "OUTPUTS"
                        );
                        for i in items(&page) {
                            println!(
                                "{:>5}  {:<28} {:>7} {:>10} {:>7}",
                                i["id"].to_string(),
                                str_of(&i["name"]),
                                i["source_count"].to_string(),
                                i["transform_count"].to_string(),
                                i["output_count"].to_string()
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

pub async fn flows(client: &Client, out: Output, cmd: FlowsCommand) -> ExitCode {
    report(
        async {
            match cmd {
                FlowsCommand::Start { input_id, follow } => {
                    let f = client
                        .post("/flows", &json!({ "flow_input_id": input_id }))
                        .await?;
                    let id = f["id"].as_i64().unwrap_or_default();
                    if out.json && !follow {
                        out.value(&f);
                    } else if !out.json {
                        println!("started flow {id} (flow input {input_id})");
                    }
                    if follow {
                        return follow_flows(client, out, &[id]).await;
                    }
                }
                FlowsCommand::Retry { id, follow } => {
                    let old = client.get(&format!("/flows/{id}")).await?;
                    let input_id = old["flow_input_id"].as_i64().unwrap_or_default();
                    let f = client
                        .post("/flows", &json!({ "flow_input_id": input_id, "retry_of": id }))
                        .await?;
                    let new = f["id"].as_i64().unwrap_or_default();
                    if out.json && !follow {
                        out.value(&f);
                    } else if !out.json {
                        println!("started flow {new}, a retry of flow {id} (flow input {input_id})");
                    }
                    if follow {
                        return follow_flows(client, out, &[new]).await;
                    }
                }
                FlowsCommand::Get { id } => {
                    let f = client.get(&format!("/flows/{id}")).await?;
                    if out.json {
                        out.value(&f);
                    } else {
                        print_flow(&f);
                    }
                }
                FlowsCommand::List { state, limit } => {
                    let mut path = format!("/flows?limit={limit}");
                    if let Some(s) = state {
                        path.push_str(&format!("&state={}", s.to_ascii_uppercase()));
                    }
                    let page = client.get(&path).await?;
                    if out.json {
                        out.value(&page);
                    } else {
                        println!(
                            "{:>5}  {:>5}  {:<10} {:>6}  {:<24} DURATION",
                            "ID", "INPUT", "STATE", "%", "CREATED"
                        );
                        for f in items(&page) {
                            let o = &f["output"];
                            println!(
                                "{:>5}  {:>5}  {:<10} {:>6.1}  {:<24} {}",
                                f["id"].to_string(),
                                f["flow_input_id"].to_string(),
                                str_of(&o["state"]),
                                o["progress"]["percent"].as_f64().unwrap_or(0.0),
                                str_of(&f["created_utc"]),
                                duration(&o["started_utc"], &o["finished_utc"])
                            );
                        }
                    }
                }
                FlowsCommand::Follow { ids } => return follow_flows(client, out, &ids).await,
                FlowsCommand::Cancel { id } => {
                    let f = client.post(&format!("/flows/cancel/{id}"), &json!({})).await?;
                    if out.json {
                        out.value(&f);
                    } else {
                        println!(
                            "cancel sent to flow {id} (it is {})",
                            str_of(&f["output"]["state"])
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// A flow input to send: a JSON file's body, or a folder's (`folder::Folder`), which also
/// knows where each of its values came from.
struct InputFiles {
    body: Value,
    folder: Option<folder::Folder>,
    path: std::path::PathBuf,
}

/// Why a flow input could not be sent or was refused.
enum InputError {
    /// Problems in the files, each with its place.
    Problems(Vec<folder::Problem>),
    Client(ClientError),
}

impl From<ClientError> for InputError {
    fn from(e: ClientError) -> Self {
        InputError::Client(e)
    }
}

impl InputError {
    /// Prints the error (problems on stdout for `validate`, else on stderr) and gives the exit
    /// code: 1 for problems found by `validate`, 3 otherwise.
    fn report(self, validating: bool) -> ExitCode {
        match self {
            InputError::Problems(problems) => {
                for p in &problems {
                    if validating {
                        println!("{p}");
                    } else {
                        eprintln!("{p}");
                    }
                }
                eprintln!("error: {} problem(s) in the flow input", problems.len());
                ExitCode::from(if validating { 1 } else { EXIT_ERROR })
            }
            InputError::Client(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

impl InputFiles {
    /// Reads `path`: a folder (store names resolved with the server's stores) or a JSON file.
    async fn read(client: &Client, path: &Path) -> Result<InputFiles, InputError> {
        if !path.is_dir() {
            return Ok(InputFiles {
                body: read_json(path)?,
                folder: None,
                path: path.to_path_buf(),
            });
        }
        let folder = folder::Folder::load(path).map_err(InputError::Problems)?;
        let stores = if folder.names_stores() {
            all_stores(client).await?
        } else {
            Vec::new()
        };
        let body = folder.body(&stores).map_err(InputError::Problems)?;
        Ok(InputFiles {
            body,
            folder: Some(folder),
            path: path.to_path_buf(),
        })
    }

    /// A refused request's problems, each at its file and line when the server named a field.
    fn explain(&self, e: ClientError) -> InputError {
        let ClientError::Status { status, problem } = &e else {
            return InputError::Client(e);
        };
        let errors = problem["errors"].as_array().cloned().unwrap_or_default();
        if !(status.as_u16() == 422 || status.as_u16() == 400) || errors.is_empty() {
            return InputError::Client(e);
        }
        let problems = errors
            .iter()
            .map(|err| {
                let path = str_of(&err["path"]);
                let message = str_of(&err["message"]);
                match &self.folder {
                    Some(folder) => folder.locate(path, message),
                    None => folder::Problem {
                        file: self.path.clone(),
                        line: 0,
                        column: None,
                        message: if path.is_empty() {
                            message.to_string()
                        } else {
                            format!("{path}: {message}")
                        },
                    },
                }
            })
            .collect();
        InputError::Problems(problems)
    }

    /// The server's dry run: the input as it would be stored.
    async fn plan(&self, client: &Client) -> Result<Value, InputError> {
        client
            .post("/flow-inputs?dry_run=true", &self.body)
            .await
            .map_err(|e| self.explain(e))
    }
}

/// Every data store of the server, as (id, name).
async fn all_stores(client: &Client) -> Result<Vec<(i64, String)>, ClientError> {
    let mut stores = Vec::new();
    let mut path = "/data-stores?limit=500".to_string();
    loop {
        let page = client.get(&path).await?;
        for s in items(&page) {
            if let Some(id) = s["id"].as_i64() {
                stores.push((id, str_of(&s["name"]).to_string()));
            }
        }
        match page["next_before_id"].as_i64() {
            Some(before) => path = format!("/data-stores?limit=500&before_id={before}"),
            None => return Ok(stores),
        }
    }
}

/// `inputs validate`: the dry run, every problem with its place.
async fn validate(client: &Client, out: Output, path: &Path) -> ExitCode {
    let planned = match InputFiles::read(client, path).await {
        Ok(input) => input.plan(client).await,
        Err(e) => Err(e),
    };
    match planned {
        Ok(planned) => {
            if out.json {
                out.value(&planned);
            } else {
                println!(
                    "{} is valid: {} source(s), {} transform(s), {} output(s)",
                    path.display(),
                    len(&planned["sources"]),
                    len(&planned["transforms"]),
                    len(&planned["outputs"])
                );
                println!("order: {}", names(&planned["dag"]["order"]));
            }
            ExitCode::SUCCESS
        }
        Err(InputError::Problems(problems)) if out.json => {
            let list: Vec<Value> = problems
                .iter()
                .map(|p| json!({"file": p.file, "line": p.line, "column": p.column, "message": p.message}))
                .collect();
            out.value(&json!({ "problems": list }));
            ExitCode::from(1)
        }
        Err(e) => e.report(true),
    }
}

/// The newest stored flow input that is exactly `planned` (a dry run's answer), if any: one of
/// the same name whose stored form, without `id` and `created_utc`, is the same.
async fn find_unchanged(client: &Client, planned: &Value) -> Result<Option<i64>, ClientError> {
    /// Inputs of the same name compared at most (newest first).
    const MAX_COMPARED: usize = 50;
    let mut planned = planned.clone();
    if let Some(map) = planned.as_object_mut() {
        map.remove("id");
        map.remove("created_utc");
    }
    let planned = &planned;
    let name = str_of(&planned["name"]);
    let mut compared = 0;
    let mut path = "/flow-inputs?limit=500".to_string();
    loop {
        let page = client.get(&path).await?;
        for summary in items(&page).filter(|i| str_of(&i["name"]) == name) {
            let Some(id) = summary["id"].as_i64() else {
                continue;
            };
            let mut stored = client.get(&format!("/flow-inputs/{id}")).await?;
            if let Some(map) = stored.as_object_mut() {
                map.remove("id");
                map.remove("created_utc");
            }
            if &stored == planned {
                return Ok(Some(id));
            }
            compared += 1;
            if compared >= MAX_COMPARED {
                return Ok(None);
            }
        }
        match page["next_before_id"].as_i64() {
            Some(before) => path = format!("/flow-inputs?limit=500&before_id={before}"),
            None => return Ok(None),
        }
    }
}

/// `run PATH`: creates the flow input if no stored one is the same, starts a flow of it and,
/// with `follow`, follows it (exit code as `flows follow`).
pub async fn run(client: &Client, out: Output, path: &Path, follow: bool) -> ExitCode {
    let outcome = async {
        let input = InputFiles::read(client, path).await?;
        let planned = input.plan(client).await?;
        let input_id = match find_unchanged(client, &planned).await? {
            Some(id) => {
                if !out.json {
                    println!("flow input {id} ({}) is unchanged", str_of(&planned["name"]));
                }
                id
            }
            None => {
                let created = client
                    .post("/flow-inputs", &input.body)
                    .await
                    .map_err(|e| input.explain(e))?;
                let id = created["id"].as_i64().unwrap_or_default();
                if !out.json {
                    println!("created flow input {id} ({})", str_of(&created["name"]));
                }
                id
            }
        };
        let f = client
            .post("/flows", &json!({ "flow_input_id": input_id }))
            .await?;
        let id = f["id"].as_i64().unwrap_or_default();
        if out.json && !follow {
            out.value(&f);
        } else if !out.json {
            println!("started flow {id} (flow input {input_id})");
        }
        if follow {
            let code = follow_flows(client, out, &[id]).await?;
            if code != ExitCode::SUCCESS && !out.json {
                if let Some(folder) = &input.folder {
                    // A transform's SQL error, at its place in the folder.
                    let f = client.get(&format!("/flows/{id}")).await?;
                    for t in f["output"]["tasks"].as_array().into_iter().flatten() {
                        if t["state"] == "FAILED" {
                            let error = str_of(&t["error"]);
                            if let Some(p) = folder.locate_task_error(str_of(&t["name"]), error) {
                                println!("{p}");
                            }
                        }
                    }
                }
            }
            return Ok(code);
        }
        Ok::<_, InputError>(ExitCode::SUCCESS)
    };
    outcome.await.unwrap_or_else(|e| e.report(false))
}

/// The exit code for a set of final states: 1 if any FAILED, else 2 if any CANCELLED, else 0.
pub fn exit_code_for(states: &[String]) -> ExitCode {
    if states.iter().any(|s| s == "FAILED") {
        ExitCode::from(1)
    } else if states.iter().any(|s| s == "CANCELLED") {
        ExitCode::from(2)
    } else if states.iter().all(|s| s == "COMPLETED") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    }
}

async fn follow_flows(client: &Client, out: Output, ids: &[i64]) -> Result<ExitCode, ClientError> {
    let bars = MultiProgress::with_draw_target(if out.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40.cyan/blue}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let label = ids.len() > 1;
    let follows = ids.iter().map(|&id| {
        let bar = bars.add(ProgressBar::new(1000));
        bar.set_style(style.clone());
        bar.set_prefix(format!("flow {id}"));
        follow_one(client, out, id, bar, label)
    });
    let states = futures::future::try_join_all(follows).await?;
    Ok(exit_code_for(&states))
}

/// Follows one flow to its end; returns its final state. Reconnects a few times if the stream
/// breaks before the end.
async fn follow_one(
    client: &Client,
    out: Output,
    id: i64,
    bar: ProgressBar,
    label: bool,
) -> Result<String, ClientError> {
    let mut state = String::new();
    let mut failures = 0;
    let print = |line: String| bar.suspend(|| println!("{line}"));
    let prefix = if label {
        format!("[flow {id}] ")
    } else {
        String::new()
    };
    // A reconnect starts with a snapshot again: its log lines up to here were printed already.
    let mut printed_logs = 0usize;
    // Each check's verdict is printed once: from the event, or from a snapshot that already
    // shows it (a verdict reached before the stream was opened).
    let mut printed_checks: std::collections::HashSet<String> = Default::default();
    let verdict = |c: &Value, printed: &mut std::collections::HashSet<String>| {
        let is_verdict = matches!(str_of(&c["state"]), "PASSED" | "FAILED" | "WARNED");
        if out.json || !is_verdict || !printed.insert(str_of(&c["name"]).to_string()) {
            return Vec::new();
        }
        check_line(c)
    };
    loop {
        let mut seen_logs = 0usize;
        let result = client
            .events(id, |ev| {
                let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                if out.json {
                    print(json!({"flow_id": id, "event": ev.event, "data": data}).to_string());
                }
                match ev.event.as_str() {
                    "snapshot" => {
                        let o = &data["output"];
                        state = str_of(&o["state"]).to_string();
                        set_bar(&bar, o["progress"]["percent"].as_f64(), &state);
                        for line in o["logs"]["lines"].as_array().into_iter().flatten() {
                            seen_logs += 1;
                            if seen_logs > printed_logs && !out.json {
                                print(format!("{prefix}{}", str_of(line)));
                            }
                        }
                        printed_logs = printed_logs.max(seen_logs);
                        for c in o["checks"].as_array().into_iter().flatten() {
                            for line in verdict(c, &mut printed_checks) {
                                print(format!("{prefix}check {line}"));
                            }
                        }
                    }
                    "state" => {
                        state = str_of(&data["state"]).to_string();
                        set_bar(&bar, data["percent"].as_f64(), &state);
                    }
                    "progress" => set_bar(&bar, data["percent"].as_f64(), &state),
                    "check" => {
                        for line in verdict(&data, &mut printed_checks) {
                            print(format!("{prefix}check {line}"));
                        }
                    }
                    "log" => {
                        seen_logs += 1;
                        printed_logs = printed_logs.max(seen_logs);
                        if !out.json {
                            print(format!("{prefix}{}", str_of(&data["line"])));
                        }
                    }
                    _ => {}
                }
            })
            .await;
        match result {
            Ok(true) => break,
            Ok(false) | Err(ClientError::Network(_)) if failures < 5 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500 << failures)).await;
            }
            Ok(false) => {
                return Err(ClientError::Network(format!(
                    "the events stream of flow {id} kept breaking"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    bar.finish_with_message(state.clone());
    if !out.json {
        let f = client.get(&format!("/flows/{id}")).await?;
        let o = &f["output"];
        print(format!(
            "flow {id} {} in {}",
            str_of(&o["state"]),
            duration(&o["started_utc"], &o["finished_utc"])
        ));
        let checks = check_lines(&o["checks"]);
        if !checks.is_empty() {
            print(format!("{prefix}checks:"));
            for line in checks {
                print(format!("{prefix}  {line}"));
            }
        }
        for line in o["errors"]["lines"].as_array().into_iter().flatten() {
            print(format!("{prefix}{}", str_of(line)));
        }
    }
    Ok(state)
}

fn set_bar(bar: &ProgressBar, percent: Option<f64>, state: &str) {
    if let Some(p) = percent {
        let pos = (p * 10.0).round().clamp(0.0, 1000.0) as u64;
        if pos > bar.position() {
            bar.set_position(pos);
        }
    }
    bar.set_message(state.to_string());
}

// ---- formatting ------------------------------------------------------------------------------

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn items(page: &Value) -> impl Iterator<Item = &Value> {
    page["items"].as_array().into_iter().flatten()
}

fn names(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" → ")
}

fn where_of(c: &Value) -> String {
    if c["type"] == "db" {
        format!(
            "{}@{}:{}/{}",
            str_of(&c["user"]),
            str_of(&c["host"]),
            c["port"],
            str_of(&c["db_name"])
        )
    } else {
        str_of(&c["path"]).to_string()
    }
}

fn duration(from: &Value, to: &Value) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let Some(from) = parse(from) else {
        return String::new();
    };
    let to = parse(to)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    let ms = (to - from.with_timezone(&chrono::Utc)).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// One check of `output.checks` for people: `PASSED  unique(stg.id) [error]`, then its
/// message and sample rows when it failed.
fn check_line(c: &Value) -> Vec<String> {
    let failing = match c["failing_rows"].as_u64() {
        Some(n) if n > 0 => format!(" {n} failing"),
        _ => String::new(),
    };
    let mut lines = vec![format!(
        "{:<8} {} [{}]{failing}",
        str_of(&c["state"]),
        str_of(&c["name"]),
        str_of(&c["severity"])
    )];
    if matches!(str_of(&c["state"]), "FAILED" | "WARNED") {
        if let Some(m) = c["message"].as_str() {
            lines.push(format!("  {m}"));
        }
        for row in c["sample"].as_array().into_iter().flatten() {
            lines.push(format!("  | {row}"));
        }
    }
    lines
}

/// Every check of `output.checks`, as `check_line` prints them.
fn check_lines(checks: &Value) -> Vec<String> {
    checks
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(check_line)
        .collect()
}

fn print_store(s: &Value) {
    let c = &s["connection"];
    println!("data store {} {}", s["id"], str_of(&s["name"]));
    println!("  kind:       {}", str_of(&s["kind"]));
    println!("  engine:     {}", str_of(&s["engine"]));
    println!("  connection: {} {}", str_of(&c["type"]), where_of(c));
    if c["type"] == "db" {
        println!(
            "  password:   {}",
            if c["password_set"] == true { "set" } else { "none" }
        );
    }
    println!("  created:    {}", str_of(&s["created_utc"]));
}

fn print_input(i: &Value) {
    println!("flow input {} {}", i["id"], str_of(&i["name"]));
    println!("  target store: {}", i["target_store_id"]);
    for s in i["sources"].as_array().into_iter().flatten() {
        let what = if !s["table"].is_null() {
            format!("table {}", str_of(&s["table"]))
        } else if !s["query"].is_null() {
            format!("query {}", str_of(&s["query"]))
        } else {
            format!("path {}", str_of(&s["path"]))
        };
        println!(
            "  source {} (store {}): {what}",
            str_of(&s["name"]),
            s["store_id"]
        );
    }
    for t in i["transforms"].as_array().into_iter().flatten() {
        println!(
            "  transform {}:\n    {}",
            str_of(&t["name"]),
            str_of(&t["sql"]).replace('\n', "\n    ")
        );
    }
    for o in i["outputs"].as_array().into_iter().flatten() {
        println!(
            "  output {} -> {} ({})",
            str_of(&o["node"]),
            str_of(&o["table"]),
            str_of(&o["mode"])
        );
    }
    for c in i["checks"].as_array().into_iter().flatten() {
        println!(
            "  check {} ({} on {}, {})",
            str_of(&c["name"]),
            str_of(&c["type"]),
            str_of(&c["node"]),
            str_of(&c["severity"])
        );
    }
    println!("  order: {}", names(&i["dag"]["order"]));
}

fn print_flow(f: &Value) {
    let o = &f["output"];
    println!(
        "flow {} (flow input {}): {} {:.1}%",
        f["id"],
        f["flow_input_id"],
        str_of(&o["state"]),
        o["progress"]["percent"].as_f64().unwrap_or(0.0)
    );
    println!("  created:  {}", str_of(&f["created_utc"]));
    println!("  started:  {}", str_of(&o["started_utc"]));
    println!("  finished: {}", str_of(&o["finished_utc"]));
    println!("  duration: {}", duration(&o["started_utc"], &o["finished_utc"]));
    println!(
        "  {:<32} {:<10} {:<10} {:>8} {:>12}  DURATION",
        "TASK", "KIND", "STATE", "ATTEMPTS", "ROWS"
    );
    for t in o["tasks"].as_array().into_iter().flatten() {
        println!(
            "  {:<32} {:<10} {:<10} {:>8} {:>12}  {}",
            str_of(&t["name"]),
            str_of(&t["kind"]),
            str_of(&t["state"]),
            t["attempts"].to_string(),
            t["rows"].as_u64().map(|r| r.to_string()).unwrap_or_default(),
            duration(&t["started_utc"], &t["finished_utc"])
        );
    }
    if let Some(cursors) = o["cursors"].as_object().filter(|c| !c.is_empty()) {
        println!("  cursors:");
        for (source, c) in cursors {
            println!("    {source}: {}", cursor_range(c));
        }
    }
    let checks = check_lines(&o["checks"]);
    if !checks.is_empty() {
        println!("  checks:");
        for line in &checks {
            println!("    {line}");
        }
    }
    let errors = o["errors"]["lines"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        println!("  errors:");
        for e in &errors {
            println!("    {}", str_of(e));
        }
    }
    let logs = o["logs"]["lines"].as_array().cloned().unwrap_or_default();
    println!("  last log lines:");
    for l in logs.iter().skip(logs.len().saturating_sub(20)) {
        println!("    {}", str_of(l));
    }
}

/// `updated_at 2026-11-30T10:00:00Z -> 2026-12-01T06:00:00Z, 1234 rows` (`everything through ...`
/// for a first read or a full refresh).
fn cursor_range(c: &Value) -> String {
    let value = |v: &Value| match v {
        Value::Null => "...".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(files) = c["files"].as_array() {
        let plural = if files.len() == 1 { "" } else { "s" };
        return format!("{} new file{plural}, {} rows", files.len(), c["rows"]);
    }
    let range = if c["after"].is_null() {
        format!("everything through {}", value(&c["through"]))
    } else {
        format!("{} -> {}", value(&c["after"]), value(&c["through"]))
    };
    format!("{} {range}, {} rows", str_of(&c["column"]), c["rows"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_range_reads_like_the_dashboard() {
        let c = serde_json::json!({"column": "updated_at", "after": "2026-11-30T10:00:00Z",
                                   "through": "2026-12-01T06:00:00Z", "rows": 1234});
        assert_eq!(
            cursor_range(&c),
            "updated_at 2026-11-30T10:00:00Z -> 2026-12-01T06:00:00Z, 1234 rows"
        );
        let first = serde_json::json!({"column": "id", "after": null, "through": 9, "rows": 9});
        assert_eq!(cursor_range(&first), "id everything through 9, 9 rows");
        let files = serde_json::json!({"files": [{"path": "a.csv", "size": 3,
                                       "modified_utc": "2026-12-01T00:00:00Z"}], "rows": 2});
        assert_eq!(cursor_range(&files), "1 new file, 2 rows");
    }

    #[test]
    fn exit_codes_follow_the_worst_state() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(exit_code_for(&s(&["COMPLETED"])), ExitCode::SUCCESS);
        assert_eq!(exit_code_for(&s(&["COMPLETED", "CANCELLED"])), ExitCode::from(2));
        assert_eq!(exit_code_for(&s(&["CANCELLED", "FAILED"])), ExitCode::from(1));
        assert_eq!(exit_code_for(&s(&["RUNNING"])), ExitCode::from(EXIT_ERROR));
    }
}
