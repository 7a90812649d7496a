//! Static analysis of transform SQL: parse with DataFusion's parser, insist on one query, and
//! collect the tables it reads (CTE names and table functions excluded), with positions. Also
//! counts the statements of a source query, in its database's own dialect.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::{
    Dialect, DuckDbDialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect,
};
use datafusion::sql::sqlparser::parser::Parser;

use super::store::StoreEngine;

/// A position in SQL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A table a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// As the engine resolves it: unquoted identifiers lowercased, parts joined with `.`.
    pub name: String,
    /// Whether it was written with a schema or catalog (`public.orders`).
    pub qualified: bool,
    pub position: Option<Position>,
}

/// Why a text is not an acceptable transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProblem {
    pub message: String,
    pub position: Option<Position>,
}

impl std::fmt::Display for SqlProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} (at {p})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How many statements a source query is, in the dialect of the database that runs it, when
/// sqlparser can tell. `None` when it cannot parse the text: the database may accept syntax
/// sqlparser does not know, and decides for itself (it runs exactly one statement either way).
pub fn statement_count(sql: &str, engine: StoreEngine) -> Option<usize> {
    let dialect: Box<dyn Dialect> = match engine {
        StoreEngine::Postgres => Box::new(PostgreSqlDialect {}),
        StoreEngine::Mysql => Box::new(MySqlDialect {}),
        StoreEngine::Sqlite => Box::new(SQLiteDialect {}),
        StoreEngine::Duckdb => Box::new(DuckDbDialect {}),
        // Parquet datasets are queried by the engine itself.
        StoreEngine::Parquet | StoreEngine::Csv => Box::new(GenericDialect {}),
    };
    Parser::parse_sql(dialect.as_ref(), sql).ok().map(|s| s.len())
}

/// Table functions the engine provides; `FROM range(10)` reads no table.
const TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];

/// Parses `sql`, checks it is exactly one query, and returns the tables it reads, in order of
/// first appearance, each once.
pub fn analyze_query(sql: &str) -> Result<Vec<TableRef>, SqlProblem> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| {
        let mut problem = parse_problem(&e.to_string());
        // The parser gives no position when the text ends too early; the end is the position.
        if problem.position.is_none() && problem.message.ends_with("found: EOF") {
            problem.position = Some(end_position(sql));
        }
        problem
    })?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => {
            return Err(SqlProblem {
                message: "the SQL is empty".into(),
                position: None,
            });
        }
        (Some(_), false) => {
            return Err(SqlProblem {
                message: "only one statement is allowed; remove the extra statements".into(),
                position: None,
            });
        }
    };
    let query = match &statement {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) => q,
            other => return Err(not_a_query(statement_kind(other))),
        },
        DFStatement::CreateExternalTable(_) => return Err(not_a_query("CREATE EXTERNAL TABLE")),
        DFStatement::CopyTo(_) => return Err(not_a_query("COPY")),
        DFStatement::Explain(_) => return Err(not_a_query("EXPLAIN")),
        DFStatement::Reset(_) => return Err(not_a_query("RESET")),
    };
    let mut visitor = RelationCollector::default();
    if let ControlFlow::Break(problem) = query.visit(&mut visitor) {
        return Err(problem);
    }
    Ok(visitor.relations)
}

fn not_a_query(kind: &str) -> SqlProblem {
    SqlProblem {
        message: format!("a transform must be a query (SELECT, WITH or VALUES), not {kind}"),
        position: None,
    }
}

fn statement_kind(statement: &Statement) -> &'static str {
    match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge { .. } => "MERGE",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView { .. } => "CREATE VIEW",
        Statement::Drop { .. } => "DROP",
        Statement::AlterTable { .. } => "ALTER TABLE",
        Statement::Truncate { .. } => "TRUNCATE",
        Statement::Copy { .. } => "COPY",
        Statement::Set(_) => "SET",
        _ => "a statement",
    }
}

/// The position just after the last character of `text`.
fn end_position(text: &str) -> Position {
    let last_line = text.rsplit('\n').next().unwrap_or_default();
    Position {
        line: text.matches('\n').count() as u64 + 1,
        column: last_line.chars().count() as u64 + 1,
    }
}

/// Turns a sqlparser message such as `Expected: ..., found: x at Line: 2, Column: 8` into a
/// problem with a position.
fn parse_problem(text: &str) -> SqlProblem {
    let text = text
        .trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(\"")
        .trim_end_matches("\")")
        .trim_start_matches("sql parser error: ");
    let position = text.rfind(" at Line: ").and_then(|at| {
        let rest = &text[at + " at Line: ".len()..];
        let (line, rest) = rest.split_once(", Column: ")?;
        let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some((
            at,
            Position {
                line: line.parse().ok()?,
                column: column.parse().ok()?,
            },
        ))
    });
    match position {
        Some((at, position)) => SqlProblem {
            message: format!("syntax error: {}", &text[..at]),
            position: Some(position),
        },
        None => SqlProblem {
            message: format!("syntax error: {text}"),
            position: None,
        },
    }
}

#[derive(Default)]
struct RelationCollector {
    relations: Vec<TableRef>,
    /// CTE names visible at the current point, innermost last.
    ctes_in_scope: Vec<String>,
    /// Set when the next relation is the name of a table function call.
    next_is_function: bool,
}

impl Visitor for RelationCollector {
    type Break = SqlProblem;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlProblem> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                // A non-recursive CTE is not in scope inside its own body: in
                // `WITH t AS (SELECT * FROM t) ...` the inner `t` is a real table.
                if !with.recursive {
                    cte.visit(self)?;
                }
                self.ctes_in_scope
                    .push(normalize_ident(&cte.alias.name.value, cte.alias.name.quote_style));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<SqlProblem> {
        if let Some(with) = &query.with {
            for _ in &with.cte_tables {
                self.ctes_in_scope.pop();
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<SqlProblem> {
        if let TableFactor::Table {
            name, args: Some(_), ..
        } = factor
        {
            let is_known_function = name.0.len() == 1
                && TABLE_FUNCTIONS
                    .iter()
                    .any(|f| name.to_string().eq_ignore_ascii_case(f));
            self.next_is_function = is_known_function;
            if !is_known_function {
                return ControlFlow::Break(SqlProblem {
                    message: format!("unknown table function {name}"),
                    position: first_position(name),
                });
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<SqlProblem> {
        if std::mem::take(&mut self.next_is_function) {
            return ControlFlow::Continue(());
        }
        let mut parts = Vec::with_capacity(relation.0.len());
        for part in &relation.0 {
            match part {
                ObjectNamePart::Identifier(ident) => {
                    parts.push(normalize_ident(&ident.value, ident.quote_style));
                }
                ObjectNamePart::Function(_) => {
                    return ControlFlow::Break(SqlProblem {
                        message: format!("unsupported table name {relation}"),
                        position: first_position(relation),
                    });
                }
            }
        }
        let name = parts.join(".");
        let qualified = parts.len() > 1;
        if !qualified && self.ctes_in_scope.contains(&name) {
            return ControlFlow::Continue(());
        }
        if !self.relations.iter().any(|r| r.name == name) {
            self.relations.push(TableRef {
                name,
                qualified,
                position: first_position(relation),
            });
        }
        ControlFlow::Continue(())
    }
}

/// How many times a query scans each table it reads: every mention counts, and a CTE mentioned
/// twice scans what it reads twice (DataFusion inlines CTEs). Used to decide which nodes are
/// worth materializing; names as in [`TableRef::name`], CTE names excluded.
pub fn count_scans(sql: &str) -> HashMap<String, u32> {
    let Ok(mut statements) = DFParser::parse_sql(sql) else {
        return HashMap::new();
    };
    let Some(DFStatement::Statement(statement)) = statements.pop_front() else {
        return HashMap::new();
    };
    let mut counter = ScanCounter::default();
    let _ = statement.visit(&mut counter);
    counter.totals()
}

/// Counts relation mentions per scope (the main query or one CTE body), then weighs each scope
/// by how often it is mentioned.
#[derive(Default)]
struct ScanCounter {
    /// CTE bodies by the address of their query node, with their name.
    cte_bodies: HashMap<usize, String>,
    /// Every CTE name of the statement (CTE names shadow tables; approximate across scopes).
    cte_names: HashSet<String>,
    /// The CTE bodies being visited, innermost last (empty: the main query).
    scopes: Vec<String>,
    /// (scope, relation) → mentions; scope "" is the main query.
    mentions: HashMap<(String, String), u32>,
    /// Set when the next relation names a table function, which reads no table.
    next_is_function: bool,
}

impl ScanCounter {
    fn totals(&self) -> HashMap<String, u32> {
        // weight(scope) = Σ mentions(s, scope) × weight(s); CTEs reference only earlier ones,
        // so a fixed number of rounds settles it (bounded for recursive CTEs).
        let mut weight: HashMap<&str, u32> = HashMap::from([("", 1)]);
        for _ in 0..=self.cte_names.len() {
            let mut next: HashMap<&str, u32> = HashMap::from([("", 1)]);
            for ((scope, relation), n) in &self.mentions {
                if self.cte_names.contains(relation) && relation != scope {
                    let w = weight.get(scope.as_str()).copied().unwrap_or(0);
                    let e = next.entry(relation.as_str()).or_insert(0);
                    *e = e.saturating_add(n.saturating_mul(w));
                }
            }
            if next == weight {
                break;
            }
            weight = next;
        }
        let mut totals = HashMap::new();
        for ((scope, relation), n) in &self.mentions {
            if self.cte_names.contains(relation) {
                continue;
            }
            let w = weight.get(scope.as_str()).copied().unwrap_or(0);
            let e = totals.entry(relation.clone()).or_insert(0u32);
            *e = e.saturating_add(n.saturating_mul(w));
        }
        totals.retain(|_, n| *n > 0);
        totals
    }
}

impl Visitor for ScanCounter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = normalize_ident(&cte.alias.name.value, cte.alias.name.quote_style);
                self.cte_bodies
                    .insert(std::ptr::from_ref(cte.query.as_ref()) as usize, name.clone());
                self.cte_names.insert(name);
            }
        }
        if let Some(name) = self.cte_bodies.get(&(std::ptr::from_ref(query) as usize)) {
            self.scopes.push(name.clone());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self
            .cte_bodies
            .contains_key(&(std::ptr::from_ref(query) as usize))
        {
            self.scopes.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.next_is_function = matches!(factor, TableFactor::Table { args: Some(_), .. });
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.next_is_function) {
            return ControlFlow::Continue(());
        }
        let mut parts = Vec::with_capacity(relation.0.len());
        for part in &relation.0 {
            match part {
                ObjectNamePart::Identifier(ident) => {
                    parts.push(normalize_ident(&ident.value, ident.quote_style))
                }
                ObjectNamePart::Function(_) => return ControlFlow::Continue(()),
            }
        }
        let scope = self.scopes.last().cloned().unwrap_or_default();
        *self.mentions.entry((scope, parts.join("."))).or_insert(0) += 1;
        ControlFlow::Continue(())
    }
}

fn normalize_ident(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

fn first_position(name: &ObjectName) -> Option<Position> {
    name.0.iter().find_map(|part| match part {
        ObjectNamePart::Identifier(ident) if ident.span.start.line > 0 => Some(Position {
            line: ident.span.start.line,
            column: ident.span.start.column,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        analyze_query(sql).unwrap().into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn source_queries_are_counted_in_their_own_dialect() {
        use StoreEngine::*;
        for engine in [Postgres, Mysql, Sqlite] {
            assert_eq!(
                statement_count("SELECT 1 AS x; COMMIT; DROP TABLE t", engine),
                Some(3)
            );
            assert_eq!(statement_count("SELECT 1 AS x; DROP TABLE t;", engine), Some(2));
            assert_eq!(statement_count("SELECT ';' AS x;", engine), Some(1));
        }
        // A semicolon inside PostgreSQL's dollar quotes, or after MySQL's backslash escape.
        assert_eq!(statement_count("SELECT $q$a; b$q$ AS x", Postgres), Some(1));
        assert_eq!(statement_count(r"SELECT 'it\'s; fine' AS x", Mysql), Some(1));
        // What sqlparser cannot parse is left to the database.
        assert_eq!(statement_count("SELECT 1 AS x; FROB THE TABLE", Postgres), None);
    }

    #[test]
    fn collects_tables_from_joins_subqueries_and_ctes() {
        assert_eq!(
            names("SELECT * FROM a JOIN b ON a.id = b.id WHERE a.x IN (SELECT x FROM c)"),
            ["a", "b", "c"]
        );
        assert_eq!(
            names("WITH t AS (SELECT * FROM src) SELECT * FROM t JOIN t2 USING (id)"),
            ["src", "t2"]
        );
        assert_eq!(names("WITH t AS (SELECT * FROM t) SELECT * FROM t"), ["t"]);
        assert_eq!(names("SELECT 1"), Vec::<String>::new());
        assert_eq!(names("VALUES (1), (2)"), Vec::<String>::new());
        assert_eq!(names("SELECT * FROM range(10)"), Vec::<String>::new());
    }

    #[test]
    fn lowercases_unquoted_and_keeps_quoted_names() {
        assert_eq!(names("SELECT * FROM Orders"), ["orders"]);
        assert_eq!(names("SELECT * FROM \"Orders\""), ["Orders"]);
        let refs = analyze_query("SELECT * FROM public.orders").unwrap();
        assert!(refs[0].qualified);
        assert_eq!(refs[0].name, "public.orders");
    }

    #[test]
    fn reports_positions() {
        let refs = analyze_query("SELECT *\n  FROM   ordrs").unwrap();
        assert_eq!(refs[0].position, Some(Position { line: 2, column: 10 }));
        let err = analyze_query("SELECT * FROM t WHERE").unwrap_err();
        assert!(err.message.starts_with("syntax error"), "{err:?}");
        let err = analyze_query("SELEC 1").unwrap_err();
        assert_eq!(err.position.map(|p| p.line), Some(1), "{err:?}");
        // Text that ends too early: the position is its end.
        let err = analyze_query("SELECT (1,\n  2").unwrap_err();
        assert_eq!(err.position, Some(Position { line: 2, column: 4 }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "syntax error: Expected: ), found: EOF (at line 2, column 4)"
        );
    }

    #[test]
    fn counts_scans_through_ctes() {
        let scans = |sql: &str| {
            let mut v: Vec<(String, u32)> = count_scans(sql).into_iter().collect();
            v.sort();
            v
        };
        let s = |pairs: &[(&str, u32)]| pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect::<Vec<_>>();
        assert_eq!(
            scans("SELECT * FROM a JOIN b USING (id) JOIN a a2 USING (id)"),
            s(&[("a", 2), ("b", 1)])
        );
        assert_eq!(
            scans("WITH t AS (SELECT * FROM src), u AS (SELECT * FROM t) SELECT * FROM u JOIN u u2 USING (id) JOIN t USING (id)"),
            s(&[("src", 3)])
        );
        assert_eq!(scans("WITH t AS (SELECT * FROM src) SELECT 1"), s(&[]));
        assert_eq!(
            scans("SELECT * FROM a WHERE x IN (SELECT x FROM a)"),
            s(&[("a", 2)])
        );
        assert_eq!(scans("SELECT * FROM range(3)"), s(&[]));
    }

    #[test]
    fn refuses_anything_but_one_query() {
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "COPY t TO 'x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "EXPLAIN SELECT 1",
            "SET x = 1",
        ] {
            let err = analyze_query(sql).unwrap_err();
            assert!(err.message.contains("must be a query"), "{sql}: {err:?}");
        }
        assert!(analyze_query("SELECT 1; SELECT 2")
            .unwrap_err()
            .message
            .contains("one statement"));
        assert!(analyze_query("  ").unwrap_err().message.contains("empty"));
    }
}
