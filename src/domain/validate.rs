//! Validation and planning of a flow input: every problem is collected (with its JSON path),
//! and a valid input comes out with defaults filled in and its DAG planned.

use std::collections::{HashMap, HashSet};

use super::checks::{Check, CheckRequest};
use super::dag::{Dag, DagNode, NodeKind};
use super::field_error::FieldError;
use super::names::{check_flow_input_name, check_node_name, did_you_mean_hint};
use super::spec::*;
use super::sql::{analyze_query, statement_count};
use super::store::{DataStore, StoreEngine, StoreKind};

/// What validation needs to know besides the request.
pub struct ValidationContext<'a> {
    /// Every store the request mentions that exists.
    pub stores: &'a HashMap<i64, DataStore>,
    pub limits: Limits,
}

/// The configured limits a flow input must keep (services build them from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sources: usize,
    pub max_transforms: usize,
    /// The longest SQL text of a transform or a check, in characters.
    pub max_sql_length: usize,
    pub max_checks: usize,
    /// `options.max_parallel_tasks` when the input does not say.
    pub default_parallel_tasks: u32,
    /// The most memory a flow may ask for (`options.memory_limit_mb`), and its default.
    pub memory_limit_mb: u64,
}

pub const MAX_TASK_TIMEOUT_S: u64 = 7 * 24 * 3600;
pub const MAX_FLOW_TIMEOUT_S: u64 = 30 * 24 * 3600;
pub const MAX_ATTEMPTS: u32 = 10;
pub const MAX_QUERY_LENGTH: usize = 100_000;
/// The longest column name a `unique_key` may give (longer than any engine allows).
pub const MAX_COLUMN_NAME_LENGTH: usize = 128;
/// At most this many columns in a `unique_key`.
pub const MAX_KEY_COLUMNS: usize = 16;

struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }
}

/// Validates `req` and plans its DAG, or returns every problem found.
pub fn validate_flow_input(
    req: FlowInputRequest,
    ctx: &ValidationContext<'_>,
) -> Result<(FlowInputSpec, Dag), Vec<FieldError>> {
    let mut p = Problems(Vec::new());
    if let Err(msg) = check_flow_input_name(&req.name) {
        p.add("name", msg);
    }
    validate_source_stores(&req.source_store_ids, ctx.stores, &mut p);
    let target = validate_target_store(req.target_store_id, ctx.stores, &mut p);

    let mut claims = NameClaims::default();
    check_count(&mut p, "sources", req.sources.len(), ctx.limits.max_sources);
    let sources = validate_sources(
        req.sources,
        &req.source_store_ids,
        ctx.stores,
        &mut claims,
        &mut p,
    );

    check_count(
        &mut p,
        "transforms",
        req.transforms.len(),
        ctx.limits.max_transforms,
    );
    for (i, t) in req.transforms.iter().enumerate() {
        claims.claim(&mut p, &t.name, format!("transforms[{i}].name"));
    }
    let node_names: Vec<&str> = sources
        .iter()
        .map(|s: &Source| s.name.as_str())
        .chain(req.transforms.iter().map(|t| t.name.as_str()))
        .collect();
    let transform_deps: Vec<Vec<String>> = req
        .transforms
        .iter()
        .enumerate()
        .map(|(i, t)| {
            transform_reads(
                &t.sql,
                &format!("transforms[{i}].sql"),
                &node_names,
                ctx.limits.max_sql_length,
                &mut p,
            )
        })
        .collect();

    let outputs = match req.outputs {
        None => default_outputs(&req.transforms, &transform_deps, &mut p),
        Some(list) => validate_outputs(list, &node_names, target, &mut p),
    };

    let options = validate_options(req.options, &ctx.limits, &mut p);

    check_count(&mut p, "checks", req.checks.len(), ctx.limits.max_checks);
    let checks = validate_flow_checks(
        req.checks,
        &node_names,
        &outputs,
        ctx.limits.max_sql_length,
        &mut p,
    );

    let nodes = dag_nodes(&sources, &req.transforms, &transform_deps, &outputs, &checks);
    let dag = plan_dag(nodes, &req.transforms, &checks, claims.duplicates, &mut p);

    match (p.0.is_empty(), dag) {
        (true, Some(dag)) => Ok((
            FlowInputSpec {
                name: req.name,
                source_store_ids: req.source_store_ids,
                target_store_id: req.target_store_id,
                sources,
                transforms: req.transforms,
                outputs,
                options,
                checks,
            },
            dag,
        )),
        _ => Err(p.0),
    }
}

/// Each store a source may read is listed once, exists and can be read.
fn validate_source_stores(ids: &[i64], stores: &HashMap<i64, DataStore>, p: &mut Problems) {
    let mut seen_ids = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let path = format!("source_store_ids[{i}]");
        if !seen_ids.insert(*id) {
            p.add(path, format!("data store {id} is listed twice"));
            continue;
        }
        match stores.get(id) {
            None => p.add(path, format!("data store {id} does not exist")),
            Some(store) if !store.is_readable() => p.add(
                path,
                format!("data store {id} ({}) cannot be read by this server", store.name),
            ),
            Some(_) => {}
        }
    }
}

/// The target store, when it exists (reported when it does not, or cannot be written).
fn validate_target_store<'a>(
    id: i64,
    stores: &'a HashMap<i64, DataStore>,
    p: &mut Problems,
) -> Option<&'a DataStore> {
    let target = stores.get(&id);
    match target {
        None => p.add("target_store_id", format!("data store {id} does not exist")),
        Some(store) if !store.is_writable() => p.add(
            "target_store_id",
            format!(
                "data store {} ({}) cannot be written by this server",
                store.id, store.name
            ),
        ),
        Some(_) => {}
    }
    target
}

/// `at most {max} {what} are allowed` under `what` when there are more.
fn check_count(p: &mut Problems, what: &str, count: usize, max: usize) {
    if count > max {
        p.add(what, format!("at most {max} {what} are allowed"));
    }
}

/// The names sources and transforms share: each valid and used once.
#[derive(Default)]
struct NameClaims {
    /// Each name claimed so far, and the path of what claimed it (`sources[0]`).
    names: HashMap<String, String>,
    /// A name was used twice: references are then ambiguous and a cycle check would mislead.
    duplicates: bool,
}

impl NameClaims {
    /// Claims `name` for the node at `path` (its `.name` field).
    fn claim(&mut self, p: &mut Problems, name: &str, path: String) {
        if let Err(msg) = check_node_name(name) {
            p.add(path, msg);
        } else if let Some(first) = self.names.get(name) {
            self.duplicates = true;
            p.add(path, format!("duplicate name {name:?}: already used by {first}"));
        } else {
            self.names
                .insert(name.to_string(), path.trim_end_matches(".name").to_string());
        }
    }
}

/// The sources, each claiming its name and reading a store listed in `source_store_ids`.
fn validate_sources(
    requests: Vec<SourceRequest>,
    source_store_ids: &[i64],
    stores: &HashMap<i64, DataStore>,
    claims: &mut NameClaims,
    p: &mut Problems,
) -> Vec<Source> {
    let mut sources = Vec::with_capacity(requests.len());
    for (i, s) in requests.into_iter().enumerate() {
        let at = |field: &str| format!("sources[{i}].{field}");
        claims.claim(p, &s.name, at("name"));
        let listed = source_store_ids.contains(&s.store_id);
        if !listed {
            p.add(
                at("store_id"),
                format!("data store {} is not listed in source_store_ids", s.store_id),
            );
        }
        let store = stores.get(&s.store_id);
        // A listed store that does not exist is reported under source_store_ids already.
        if store.is_none() && !listed {
            p.add(
                at("store_id"),
                format!("data store {} does not exist", s.store_id),
            );
        }
        if let Some(source) = validate_source(s, store, i, p) {
            sources.push(source);
        }
    }
    sources
}

/// The nodes a transform's SQL (at `path`) reads: each a source or transform of the flow,
/// by its plain name.
fn transform_reads(
    sql: &str,
    path: &str,
    node_names: &[&str],
    max_sql_length: usize,
    p: &mut Problems,
) -> Vec<String> {
    let mut deps = Vec::new();
    // Characters, as the message and the OpenAPI document (`maxLength`) count them.
    let length = sql.chars().count();
    if length > max_sql_length {
        p.add(
            path,
            format!("the SQL is {length} characters long; at most {max_sql_length} are allowed"),
        );
        return deps;
    }
    let refs = match analyze_query(sql) {
        Err(problem) => {
            p.add(path, problem.to_string());
            return deps;
        }
        Ok(refs) => refs,
    };
    for r in refs {
        let at = r.position.map(|pos| format!(" (at {pos})")).unwrap_or_default();
        if r.qualified {
            p.add(
                path,
                format!(
                    "table {:?}{at}: transforms read sources and other transforms by their plain name",
                    r.name
                ),
            );
        } else if node_names.contains(&r.name.as_str()) {
            deps.push(r.name);
        } else {
            let hint = did_you_mean_hint(&r.name, node_names.iter().copied());
            p.add(
                path,
                format!(
                    "unknown table {:?}{at}{hint}; a transform can read the flow's sources and transforms",
                    r.name
                ),
            );
        }
    }
    deps
}

/// The outputs of a flow that lists none: every transform no other transform reads, replacing
/// a table of its name.
fn default_outputs(
    transforms: &[Transform],
    transform_deps: &[Vec<String>],
    p: &mut Problems,
) -> Vec<Output> {
    let read_by_transforms: HashSet<&str> = transform_deps.iter().flatten().map(String::as_str).collect();
    if transforms.is_empty() {
        p.add(
            "outputs",
            "nothing to persist: add transforms, or list outputs naming sources",
        );
    }
    transforms
        .iter()
        .filter(|t| !read_by_transforms.contains(t.name.as_str()))
        .map(|t| Output {
            node: t.name.clone(),
            table: t.name.clone(),
            mode: WriteMode::Replace,
            unique_key: None,
            columns: vec![],
        })
        .collect()
}

/// The listed outputs: each of a known node, into a table no other output writes.
fn validate_outputs(
    list: Vec<OutputRequest>,
    node_names: &[&str],
    target: Option<&DataStore>,
    p: &mut Problems,
) -> Vec<Output> {
    if list.is_empty() {
        p.add(
            "outputs",
            "must not be empty (omit it to persist every final transform)",
        );
    }
    let mut tables = HashSet::new();
    list.into_iter()
        .enumerate()
        .map(|(i, o)| validate_output(o, i, node_names, target, &mut tables, p))
        .collect()
}

/// Output `i`; `tables` holds the tables of the outputs before it.
fn validate_output(
    o: OutputRequest,
    i: usize,
    node_names: &[&str],
    target: Option<&DataStore>,
    tables: &mut HashSet<String>,
    p: &mut Problems,
) -> Output {
    let at = |field: &str| format!("outputs[{i}].{field}");
    if !node_names.contains(&o.node.as_str()) {
        let hint = did_you_mean_hint(&o.node, node_names.iter().copied());
        p.add(at("node"), format!("unknown node {:?}{hint}", o.node));
    }
    let table = o.table.unwrap_or_else(|| o.node.clone());
    if let Some(target) = target {
        if let Err(msg) = check_target_table(&table, target.engine) {
            p.add(at("table"), msg);
        }
    }
    if !tables.insert(table.clone()) {
        p.add(at("table"), format!("{table:?} is written by another output too"));
    }
    let mode = parse_write_mode(o.mode.as_deref(), &at("mode"), p);
    let unique_key = validate_unique_key(o.unique_key, mode, &at("unique_key"), p);
    let columns = validate_contract(o.columns, i, p);
    Output {
        node: o.node,
        table,
        mode,
        unique_key,
        columns,
    }
}

/// An output's `mode` (absent: `replace`).
fn parse_write_mode(mode: Option<&str>, path: &str, p: &mut Problems) -> WriteMode {
    match mode {
        None | Some("replace") => WriteMode::Replace,
        Some("append") => WriteMode::Append,
        Some("merge") => WriteMode::Merge,
        Some(other) => {
            p.add(
                path,
                format!("unknown mode {other:?}: use replace, append or merge"),
            );
            WriteMode::Replace
        }
    }
}

/// The flow's checks, whose names must not repeat any node's.
fn validate_flow_checks(
    requests: Vec<CheckRequest>,
    node_names: &[&str],
    outputs: &[Output],
    max_sql_length: usize,
    p: &mut Problems,
) -> Vec<Check> {
    let mut taken: HashSet<String> = node_names.iter().map(|n| n.to_string()).collect();
    taken.extend(outputs.iter().map(Output::node_name));
    super::checks::validate_checks(
        requests,
        &super::checks::CheckContext {
            nodes: node_names,
            taken: &taken,
            max_sql_length,
        },
        &mut p.0,
    )
}

/// The nodes of the flow's DAG: ingests, transforms, persists, checks.
fn dag_nodes(
    sources: &[Source],
    transforms: &[Transform],
    transform_deps: &[Vec<String>],
    outputs: &[Output],
    checks: &[Check],
) -> Vec<DagNode> {
    let ingests = sources
        .iter()
        .map(|s| DagNode::new(s.name.clone(), NodeKind::Ingest, vec![]));
    let transforms = transforms
        .iter()
        .zip(transform_deps)
        .map(|(t, deps)| DagNode::new(t.name.clone(), NodeKind::Transform, deps.clone()));
    let persists = outputs
        .iter()
        .map(|o| DagNode::new(o.node_name(), NodeKind::Persist, vec![o.node.clone()]));
    let checks = checks
        .iter()
        .map(|c| DagNode::new(c.name.clone(), NodeKind::Check, c.reads()));
    ingests.chain(transforms).chain(persists).chain(checks).collect()
}

/// The DAG, planned, or `None` with the cycle reported (cycles are only meaningful once names
/// resolve: with `duplicates`, none is reported).
fn plan_dag(
    nodes: Vec<DagNode>,
    transforms: &[Transform],
    checks: &[Check],
    duplicates: bool,
    p: &mut Problems,
) -> Option<Dag> {
    match Dag::build(nodes) {
        Ok(mut dag) => {
            super::plan::plan_materialization(&mut dag, transforms, checks);
            Some(dag)
        }
        Err(_) if duplicates => None,
        Err(cycle) => {
            let first = transforms.iter().position(|t| Some(&t.name) == cycle.first());
            let path = first
                .map(|i| format!("transforms[{i}].sql"))
                .unwrap_or_else(|| "transforms".into());
            p.add(
                path,
                format!("cycle: {} (each reads the next)", cycle.join(" -> ")),
            );
            None
        }
    }
}

/// The `unique_key` of an output: required (one or more distinct column names) for `merge`,
/// not allowed for the other modes. Whether the columns exist is checked when the result's
/// columns are known, before anything is staged.
fn validate_unique_key(
    key: Option<Vec<String>>,
    mode: WriteMode,
    path: &str,
    p: &mut Problems,
) -> Option<Vec<String>> {
    match (mode, key) {
        (WriteMode::Merge, None) => {
            p.add(
                path,
                "a merge output needs unique_key: the columns that identify a row, e.g. [\"order_id\"]",
            );
            None
        }
        (WriteMode::Merge, Some(key)) => {
            if key.is_empty() {
                p.add(path, "must name at least one column");
            } else if key.len() > MAX_KEY_COLUMNS {
                p.add(path, format!("at most {MAX_KEY_COLUMNS} columns are allowed"));
            }
            let mut seen = HashSet::new();
            for (i, column) in key.iter().enumerate() {
                if column.trim().is_empty() {
                    p.add(format!("{path}[{i}]"), "must not be empty");
                } else if column.chars().count() > MAX_COLUMN_NAME_LENGTH {
                    p.add(
                        format!("{path}[{i}]"),
                        format!("at most {MAX_COLUMN_NAME_LENGTH} characters are allowed"),
                    );
                } else if !seen.insert(column.as_str()) {
                    p.add(
                        format!("{path}[{i}]"),
                        format!("column {column:?} is listed twice"),
                    );
                }
            }
            Some(key)
        }
        (other, Some(_)) => {
            p.add(
                path,
                format!(
                    "unique_key applies to merge outputs only (this output's mode is {}): remove it, or use \"mode\": \"merge\"",
                    other.as_str()
                ),
            );
            None
        }
        (_, None) => None,
    }
}

fn validate_source(
    s: SourceRequest,
    store: Option<&DataStore>,
    i: usize,
    p: &mut Problems,
) -> Option<Source> {
    let at = |field: &str| format!("sources[{i}].{field}");
    let given: Vec<&str> = [
        ("table", s.table.is_some()),
        ("query", s.query.is_some()),
        ("path", s.path.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if given.len() > 1 {
        p.add(
            at(given[1]),
            format!(
                "give only one of table, query or path (found {})",
                given.join(" and ")
            ),
        );
    }
    if let Some(t) = &s.table {
        if let Err(msg) = check_table_name(t) {
            p.add(at("table"), msg);
        }
    }
    if let Some(q) = &s.query {
        if q.trim().is_empty() {
            p.add(at("query"), "must not be empty");
        } else if q.chars().count() > MAX_QUERY_LENGTH {
            p.add(
                at("query"),
                format!("at most {MAX_QUERY_LENGTH} characters are allowed"),
            );
        }
    }
    if let Some(path) = &s.path {
        if let Err(msg) = super::paths::check_relative_pattern(path) {
            p.add(at("path"), msg);
        }
    }
    let mut csv = None;
    if let Some(store) = store {
        match store.kind {
            StoreKind::RelationalDb | StoreKind::ColumnarDb => {
                if s.path.is_some() {
                    p.add(
                        at("path"),
                        format!(
                            "store {} is a {} store: read a table or a query",
                            store.name,
                            store.kind.as_str()
                        ),
                    );
                } else if given.is_empty() {
                    p.add(at("table"), "give a table or a query");
                }
                // The database runs exactly one statement of a source query in any case; this
                // says so at once, where sqlparser can count them.
                let countable = s.query.as_deref().filter(|q| q.len() <= MAX_QUERY_LENGTH);
                if let Some(n) = countable.and_then(|q| statement_count(q, store.engine)) {
                    if n > 1 {
                        p.add(
                            at("query"),
                            format!(
                                "is {n} statements; a source query is exactly one statement (it is \
                                 run alone, in a read-only transaction): remove the others"
                            ),
                        );
                    }
                }
                if s.csv.is_some() {
                    p.add(
                        at("csv"),
                        format!(
                            "csv options apply to csv file stores, not to {}",
                            store.engine.as_str()
                        ),
                    );
                }
            }
            StoreKind::File => {
                for field in ["table", "query"] {
                    if given.contains(&field) {
                        p.add(
                            at(field),
                            format!(
                                "store {} is a file store: read a path (relative to the store's path)",
                                store.name
                            ),
                        );
                    }
                }
                if store.engine == StoreEngine::Csv {
                    csv = Some(validate_csv(s.csv.clone().unwrap_or_default(), i, p));
                } else if s.csv.is_some() {
                    p.add(
                        at("csv"),
                        format!(
                            "csv options apply to csv stores, not to {}",
                            store.engine.as_str()
                        ),
                    );
                }
            }
        }
    }
    let incremental = match s.incremental {
        None => None,
        Some(inc) => validate_incremental(inc, store, s.path.is_some(), &at, p),
    };
    Some(Source {
        name: s.name,
        store_id: s.store_id,
        table: s.table,
        query: s.query,
        path: s.path,
        csv,
        incremental,
        only_files: None,
    })
}

/// `sources[i].incremental`: a cursor on a database source, or `new_files` on a file glob.
fn validate_incremental(
    inc: IncrementalRequest,
    store: Option<&DataStore>,
    has_path: bool,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Incremental> {
    let new_files = inc.new_files.unwrap_or(false);
    match (inc.cursor, new_files) {
        (None, false) => {
            let hint = if inc.new_files == Some(false) {
                "new_files: false reads nothing incrementally: drop incremental, or give a cursor"
            } else {
                "give the cursor column ({\"cursor\": \"updated_at\"}) or, for files, {\"new_files\": true}"
            };
            p.add(at("incremental"), hint);
            None
        }
        (Some(_), true) => {
            p.add(
                at("incremental"),
                "give either cursor (a database source) or new_files (a file source), not both",
            );
            None
        }
        (None, true) => {
            let file = store.is_none_or(|st| st.kind == StoreKind::File);
            if !file {
                p.add(
                    at("incremental.new_files"),
                    "new_files reads a file store: this store is not a csv or parquet file store",
                );
            } else if !has_path {
                p.add(
                    at("incremental.new_files"),
                    "new_files needs a path (a glob such as events/*.csv)",
                );
            }
            Some(Incremental {
                cursor: None,
                new_files: true,
            })
        }
        (Some(cursor), false) if cursor.trim().is_empty() => {
            p.add(at("incremental.cursor"), "must not be empty");
            None
        }
        (Some(cursor), false) if cursor.chars().count() > MAX_COLUMN_NAME_LENGTH => {
            p.add(
                at("incremental.cursor"),
                format!("at most {MAX_COLUMN_NAME_LENGTH} characters are allowed"),
            );
            None
        }
        (Some(cursor), false) => {
            let relational = store.is_none_or(|st| st.kind == StoreKind::RelationalDb);
            if !relational {
                p.add(
                    at("incremental.cursor"),
                    "a cursor reads a database table or query: this store is not a relational database",
                );
            }
            Some(Incremental {
                cursor: Some(cursor),
                new_files: false,
            })
        }
    }
}

fn single_byte(value: &str, path: String, p: &mut Problems) -> bool {
    let ok = value.len() == 1 && value.is_ascii();
    if !ok {
        p.add(path, format!("must be one ASCII character, not {value:?}"));
    }
    ok
}

fn validate_csv(req: CsvOptionsRequest, i: usize, p: &mut Problems) -> CsvOptions {
    let at = |field: &str| format!("sources[{i}].csv.{field}");
    let mut o = CsvOptions::default();
    if let Some(d) = req.delimiter {
        if single_byte(&d, at("delimiter"), p) {
            o.delimiter = d;
        }
    }
    if let Some(q) = req.quote {
        if single_byte(&q, at("quote"), p) {
            o.quote = q;
        }
    }
    if let Some(e) = req.escape {
        if single_byte(&e, at("escape"), p) {
            o.escape = Some(e);
        }
    }
    if let Some(h) = req.has_header {
        o.has_header = h;
    }
    if let Some(n) = req.null_values {
        o.null_values = n;
    }
    if let Some(rows) = req.infer_rows {
        if (1..=1_000_000).contains(&rows) {
            o.infer_rows = rows;
        } else {
            p.add(at("infer_rows"), "must be between 1 and 1000000");
        }
    }
    if let Some(cols) = req.columns {
        for (name, ty) in &cols {
            if let Err(msg) = parse_column_type(ty) {
                p.add(format!("sources[{i}].csv.columns.{name}"), msg);
            }
        }
        o.columns = cols;
    }
    o
}

/// An output's declared columns: names unique and not blank, types as docs/types.md names them.
fn validate_contract(
    columns: Option<Vec<ColumnContractRequest>>,
    i: usize,
    p: &mut Problems,
) -> Vec<ColumnContract> {
    let Some(columns) = columns else {
        return vec![];
    };
    if columns.is_empty() {
        p.add(
            format!("outputs[{i}].columns"),
            "must not be empty (omit it to declare no contract)",
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(columns.len());
    for (j, c) in columns.into_iter().enumerate() {
        let at = |field: &str| format!("outputs[{i}].columns[{j}].{field}");
        if c.name.trim().is_empty() || c.name.chars().count() > 255 {
            p.add(at("name"), "a column name has 1 to 255 characters");
        } else if !seen.insert(c.name.clone()) {
            p.add(at("name"), format!("column {:?} is declared twice", c.name));
        }
        if let Err(msg) = super::contract::parse_contract_type(&c.column_type) {
            p.add(at("type"), msg);
        }
        out.push(ColumnContract {
            name: c.name,
            column_type: c.column_type.trim().to_string(),
            nullable: c.nullable.unwrap_or(true),
        });
    }
    out
}

fn validate_options(req: OptionsRequest, limits: &Limits, p: &mut Problems) -> FlowOptions {
    let mut range = |name: &str, value: Option<u64>, min: u64, max: u64, default: u64| -> u64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                p.add(
                    format!("options.{name}"),
                    format!("{v} is out of range: use {min} to {max}"),
                );
                default
            }
        }
    };
    let max_parallel_tasks = range(
        "max_parallel_tasks",
        req.max_parallel_tasks.map(u64::from),
        1,
        64,
        u64::from(limits.default_parallel_tasks),
    ) as u32;
    let task_timeout_s = range("task_timeout_s", req.task_timeout_s, 1, MAX_TASK_TIMEOUT_S, 3600);
    let flow_timeout_s = req
        .flow_timeout_s
        .map(|v| range("flow_timeout_s", Some(v), 1, MAX_FLOW_TIMEOUT_S, v));
    let max_attempts = range(
        "max_attempts",
        req.max_attempts.map(u64::from),
        1,
        u64::from(MAX_ATTEMPTS),
        3,
    ) as u32;
    let memory_limit_mb = range(
        "memory_limit_mb",
        req.memory_limit_mb,
        16,
        limits.memory_limit_mb,
        limits.memory_limit_mb,
    );
    FlowOptions {
        max_parallel_tasks,
        fail_fast: req.fail_fast.unwrap_or(false),
        task_timeout_s,
        flow_timeout_s,
        max_attempts,
        memory_limit_mb,
    }
}

/// What `check_table_name` accepts, as a regular expression (for the OpenAPI document).
pub const TABLE_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62}){0,2}$";

/// A source table: one to three dot-separated identifiers.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 3 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(format!(
            "invalid table name {name:?}: use [schema.]table, each part letters, digits or '_', starting with a letter or '_'"
        ))
    }
}

/// An output table, as the target's engine can name it.
fn check_target_table(name: &str, engine: StoreEngine) -> Result<(), String> {
    match engine {
        StoreEngine::Postgres | StoreEngine::Mysql => {
            check_table_name(name)?;
            if name.split('.').count() > 2 {
                return Err(format!("invalid table name {name:?}: use table or schema.table"));
            }
            Ok(())
        }
        StoreEngine::Sqlite => {
            check_table_name(name)?;
            match name.split_once('.') {
                None => Ok(()),
                Some(("main", rest)) if !rest.contains('.') => Ok(()),
                Some(_) => Err(format!(
                    "invalid table name {name:?}: SQLite targets take table or main.table"
                )),
            }
        }
        StoreEngine::Csv | StoreEngine::Parquet | StoreEngine::Duckdb => {
            let ok = !name.is_empty()
                && name.len() <= 200
                && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && !name.contains("..");
            if ok {
                Ok(())
            } else {
                Err(format!("invalid name {name:?}: file targets take a file name of letters, digits, '_', '-' or '.'"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::store::{Connection, DbConnection, FileConnection};
    use serde_json::json;

    fn problems(p: &Problems) -> Vec<(&str, &str)> {
        p.0.iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect()
    }

    fn transform(name: &str, sql: &str) -> Transform {
        Transform {
            name: name.into(),
            sql: sql.into(),
            materialize: None,
        }
    }

    #[test]
    fn counts_over_their_limit_are_reported_under_their_field() {
        let mut p = Problems(Vec::new());
        check_count(&mut p, "sources", 3, 3);
        check_count(&mut p, "checks", 4, 3);
        assert_eq!(problems(&p), [("checks", "at most 3 checks are allowed")]);
    }

    #[test]
    fn a_name_claimed_twice_is_a_duplicate_naming_the_first() {
        let mut p = Problems(Vec::new());
        let mut claims = NameClaims::default();
        claims.claim(&mut p, "orders", "sources[0].name".into());
        claims.claim(&mut p, "Bad Name", "sources[1].name".into());
        assert!(!claims.duplicates);
        claims.claim(&mut p, "orders", "transforms[0].name".into());
        assert!(claims.duplicates);
        assert_eq!(p.0.len(), 2);
        assert_eq!(p.0[0].path, "sources[1].name");
        assert_eq!(
            problems(&p)[1],
            (
                "transforms[0].name",
                "duplicate name \"orders\": already used by sources[0]"
            )
        );
    }

    #[test]
    fn transforms_read_known_nodes_by_their_plain_name() {
        let mut p = Problems(Vec::new());
        let nodes = ["orders", "customers"];
        let deps = transform_reads(
            "SELECT * FROM orders JOIN customers USING (id)",
            "transforms[0].sql",
            &nodes,
            1000,
            &mut p,
        );
        assert_eq!(deps, ["orders", "customers"]);
        assert!(p.0.is_empty());
        let deps = transform_reads("SELECT * FROM ordrs", "transforms[1].sql", &nodes, 1000, &mut p);
        assert!(deps.is_empty());
        assert_eq!(p.0[0].path, "transforms[1].sql");
        assert!(
            p.0[0].message.contains("(did you mean \"orders\"?)"),
            "{}",
            p.0[0].message
        );
        let deps = transform_reads("SELECT 1", "transforms[2].sql", &nodes, 5, &mut p);
        assert!(deps.is_empty());
        assert_eq!(
            problems(&p)[1],
            (
                "transforms[2].sql",
                "the SQL is 8 characters long; at most 5 are allowed"
            )
        );
    }

    #[test]
    fn without_outputs_every_final_transform_replaces_its_table() {
        let mut p = Problems(Vec::new());
        let transforms = [
            transform("stg", "SELECT 1"),
            transform("fct", "SELECT * FROM stg"),
        ];
        let deps = vec![vec![], vec!["stg".to_string()]];
        let outputs = default_outputs(&transforms, &deps, &mut p);
        assert!(p.0.is_empty());
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            (outputs[0].node.as_str(), outputs[0].table.as_str()),
            ("fct", "fct")
        );
        assert_eq!(outputs[0].mode, WriteMode::Replace);
        assert!(default_outputs(&[], &[], &mut p).is_empty());
        assert_eq!(p.0[0].path, "outputs");
    }

    #[test]
    fn write_modes_default_to_replace_and_unknown_ones_are_reported() {
        let mut p = Problems(Vec::new());
        assert_eq!(
            parse_write_mode(None, "outputs[0].mode", &mut p),
            WriteMode::Replace
        );
        assert_eq!(
            parse_write_mode(Some("append"), "outputs[0].mode", &mut p),
            WriteMode::Append
        );
        assert_eq!(
            parse_write_mode(Some("merge"), "outputs[0].mode", &mut p),
            WriteMode::Merge
        );
        assert!(p.0.is_empty());
        assert_eq!(
            parse_write_mode(Some("upsert"), "outputs[1].mode", &mut p),
            WriteMode::Replace
        );
        assert_eq!(
            problems(&p),
            [(
                "outputs[1].mode",
                "unknown mode \"upsert\": use replace, append or merge"
            )]
        );
    }

    fn store(id: i64, kind: StoreKind, engine: StoreEngine) -> DataStore {
        let connection = match engine {
            StoreEngine::Postgres | StoreEngine::Mysql => Connection::Db(DbConnection {
                host: "h".into(),
                port: 1,
                user: "u".into(),
                db_name: "d".into(),
            }),
            _ => Connection::File(FileConnection { path: "/data".into() }),
        };
        DataStore {
            id,
            created_utc: chrono::Utc::now(),
            name: format!("s{id}"),
            kind,
            engine,
            connection,
            password: None,
        }
    }

    /// The limits of the default configuration (`config/default.toml`).
    fn limits() -> Limits {
        Limits {
            max_sources: 200,
            max_transforms: 500,
            max_sql_length: 100_000,
            max_checks: 500,
            default_parallel_tasks: 4,
            memory_limit_mb: 2048,
        }
    }

    fn run(req: serde_json::Value) -> Result<(FlowInputSpec, Dag), Vec<FieldError>> {
        let stores: HashMap<i64, DataStore> = [
            store(1, StoreKind::RelationalDb, StoreEngine::Sqlite),
            store(2, StoreKind::File, StoreEngine::Csv),
            store(3, StoreKind::ColumnarDb, StoreEngine::Parquet),
        ]
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
        let ctx = ValidationContext {
            stores: &stores,
            limits: limits(),
        };
        validate_flow_input(serde_json::from_value(req).unwrap(), &ctx)
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn plans_a_valid_input_with_defaults() {
        let (spec, dag) = run(json!({
            "name": "shop", "source_store_ids": [1, 2], "target_store_id": 3,
            "sources": [
                {"name": "orders", "store_id": 1, "table": "orders"},
                {"name": "customers", "store_id": 2, "path": "customers.csv"}
            ],
            "transforms": [
                {"name": "stg_orders", "sql": "SELECT id, customer_id FROM orders"},
                {"name": "totals", "sql": "SELECT c.id, count(*) AS n FROM customers c JOIN stg_orders o ON o.customer_id = c.id GROUP BY c.id"}
            ]
        }))
        .unwrap();
        assert_eq!(
            spec.outputs,
            vec![Output {
                node: "totals".into(),
                table: "totals".into(),
                mode: WriteMode::Replace,
                unique_key: None,
                columns: vec![],
            }]
        );
        assert_eq!(spec.options.max_attempts, 3);
        assert_eq!(spec.sources[1].csv, Some(CsvOptions::default()));
        assert_eq!(
            dag.order,
            ["orders", "customers", "stg_orders", "totals", "totals->totals"]
        );
        assert_eq!(
            dag.node("totals").unwrap().depends_on,
            ["customers", "stg_orders"]
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let errors = run(json!({
            "name": "x", "source_store_ids": [1, 9], "target_store_id": 8,
            "sources": [
                {"name": "orders", "store_id": 1, "table": "orders"},
                {"name": "Bad Name", "store_id": 2, "path": "../etc/passwd"},
                {"name": "orders", "store_id": 3, "table": "t"}
            ],
            "transforms": [
                {"name": "a", "sql": "SELECT * FROM ordrs"},
                {"name": "b", "sql": "SELEC 1"},
                {"name": "c", "sql": "DELETE FROM orders"}
            ],
            "outputs": [{"node": "zz", "mode": "upsert"}],
            "options": {"max_attempts": 0, "memory_limit_mb": 999999}
        }))
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "source_store_ids[1]",
                "target_store_id",
                "sources[1].name",
                "sources[1].store_id",
                "sources[1].path",
                "sources[2].name",
                "sources[2].store_id",
                "transforms[0].sql",
                "transforms[1].sql",
                "transforms[2].sql",
                "outputs[0].node",
                "outputs[0].mode",
                "options.max_attempts",
                "options.memory_limit_mb",
            ],
            "{errors:#?}"
        );
        assert!(
            errors[7].message.contains("did you mean \"orders\""),
            "{}",
            errors[7].message
        );
        assert!(
            errors[7].message.contains("line 1, column 15"),
            "{}",
            errors[7].message
        );
    }

    #[test]
    fn reports_cycles_with_their_path() {
        let errors = run(json!({
            "name": "x", "source_store_ids": [1], "target_store_id": 3,
            "sources": [{"name": "src", "store_id": 1, "table": "t"}],
            "transforms": [
                {"name": "a", "sql": "SELECT * FROM c JOIN src USING (id)"},
                {"name": "b", "sql": "SELECT * FROM a"},
                {"name": "c", "sql": "SELECT * FROM b"}
            ],
            "outputs": [{"node": "c"}]
        }))
        .unwrap_err();
        assert_eq!(paths(&errors), ["transforms[0].sql"]);
        assert_eq!(errors[0].message, "cycle: a -> c -> b -> a (each reads the next)");
    }

    #[test]
    fn source_shape_must_fit_the_store() {
        let errors = run(json!({
            "name": "x", "source_store_ids": [1, 2], "target_store_id": 1,
            "sources": [
                {"name": "a", "store_id": 1, "path": "x.csv"},
                {"name": "b", "store_id": 2, "table": "t"},
                {"name": "c", "store_id": 1},
                {"name": "d", "store_id": 1, "table": "t", "query": "SELECT 1"},
                {"name": "e", "store_id": 2, "path": "x.csv", "csv": {"delimiter": ";;", "columns": {"n": "money"}}}
            ],
            "outputs": [{"node": "a", "table": "other.t"}]
        }))
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "sources[0].path",
                "sources[1].table",
                "sources[2].table",
                "sources[3].query",
                "sources[4].csv.delimiter",
                "sources[4].csv.columns.n",
                "outputs[0].table",
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn the_table_pattern_accepts_exactly_what_the_check_accepts() {
        let pattern = regex::Regex::new(TABLE_NAME_PATTERN).unwrap();
        let mut samples = crate::domain::names::tests::name_samples();
        for extra in [
            "public.orders",
            "a.b.c",
            "a.b.c.d",
            "a..b",
            ".a",
            "a.",
            "x$y.z",
            "a.9b",
            "db.s.t",
            "public.Orders_2",
            "a.b\n",
        ] {
            samples.push(extra.to_string());
        }
        samples.push(format!("{}.{}", "a".repeat(63), "b".repeat(63)));
        samples.push(format!("{}.{}", "a".repeat(63), "b".repeat(64)));
        for name in samples {
            assert_eq!(
                pattern.is_match(&name),
                check_table_name(&name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_merge_output_needs_a_unique_key_and_only_a_merge_output_has_one() {
        let with = |outputs: serde_json::Value| {
            run(json!({
                "name": "m", "source_store_ids": [2], "target_store_id": 1,
                "sources": [{"name": "a", "store_id": 2, "path": "a.csv"}],
                "transforms": [{"name": "b", "sql": "SELECT * FROM a"}],
                "outputs": outputs
            }))
        };
        let (spec, _) = with(json!([{"node": "b", "mode": "merge", "unique_key": ["id", "day"]}])).unwrap();
        assert_eq!(spec.outputs[0].mode, WriteMode::Merge);
        assert_eq!(
            spec.outputs[0].unique_key,
            Some(vec!["id".to_string(), "day".to_string()])
        );

        let errors = with(json!([
            {"node": "b", "table": "t1", "mode": "merge"},
            {"node": "b", "table": "t2", "unique_key": ["id"]},
            {"node": "b", "table": "t3", "mode": "merge", "unique_key": []},
            {"node": "b", "table": "t4", "mode": "merge", "unique_key": ["id", " ", "id"]}
        ]))
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "outputs[0].unique_key",
                "outputs[1].unique_key",
                "outputs[2].unique_key",
                "outputs[3].unique_key[1]",
                "outputs[3].unique_key[2]"
            ]
        );
        assert!(errors[0].message.contains("needs unique_key"), "{errors:?}");
        assert!(errors[1].message.contains("mode is replace"), "{errors:?}");
        assert!(errors[4].message.contains("listed twice"), "{errors:?}");
    }

    #[test]
    fn a_duplicate_name_is_not_also_reported_as_a_cycle() {
        let errors = run(json!({
            "name": "x", "source_store_ids": [1], "target_store_id": 3,
            "sources": [{"name": "orders", "store_id": 1, "table": "t"}],
            "transforms": [{"name": "orders", "sql": "SELECT * FROM orders"}]
        }))
        .unwrap_err();
        assert_eq!(paths(&errors), ["transforms[0].name"], "{errors:#?}");
    }
}
