//! Checks: data tests on a node's result that gate publishing (`not_null`, `unique`,
//! `accepted_values`, `relationships`, `row_count`, `expression`, `query`). Here: the request
//! as received, its validation (names, nodes, SQL that parses and is a query, "did you mean"),
//! the validated form that is stored, the SQL each check runs (one query whose rows are the
//! failing rows), and how a result is told to people. Pure; the engine runs the SQL.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::field_error::FieldError;
use super::names::did_you_mean_hint;
use super::sql::analyze_query;

/// The most characters a check's name may have.
pub const MAX_CHECK_NAME_CHARS: usize = 200;
/// The most sample rows a check result keeps.
pub const MAX_SAMPLE_ROWS: usize = 5;
/// Longer text values in a sample are cut to this many characters (and end with `…`).
pub const MAX_SAMPLE_VALUE_CHARS: usize = 100;

/// One entry of `checks` as received (permissive, so that value problems become 422s).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The node (source or transform) whose result is checked.
    pub node: String,
    /// `not_null`, `unique`, `accepted_values`, `relationships`, `row_count`, `expression` or
    /// `query`.
    #[serde(rename = "type")]
    pub check_type: String,
    /// Unique among the checks; default `type(node.columns)`.
    pub name: Option<String>,
    /// `error` (default: a failure fails the flow and nothing is published) or `warn`.
    pub severity: Option<String>,
    /// `not_null`, `unique`: the columns (one or more).
    pub columns: Option<Vec<String>>,
    /// `accepted_values`, `relationships` (and a one-column `not_null` or `unique`).
    pub column: Option<String>,
    /// `accepted_values`: the values `column` may hold (NULL passes; add `not_null`).
    pub values: Option<Vec<serde_json::Value>>,
    /// `relationships`: the node that must hold every value of `column` in `to_column`.
    pub to: Option<String>,
    pub to_column: Option<String>,
    /// `row_count`: at least this many rows.
    pub min: Option<i64>,
    /// `row_count`: at most this many rows.
    pub max: Option<i64>,
    /// `expression`: a boolean SQL expression every row must satisfy; `query`: a query that
    /// returns the failing rows.
    pub sql: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    NotNull,
    Unique,
    AcceptedValues,
    Relationships,
    RowCount,
    Expression,
    Query,
}

impl CheckType {
    pub const ALL: [CheckType; 7] = [
        CheckType::NotNull,
        CheckType::Unique,
        CheckType::AcceptedValues,
        CheckType::Relationships,
        CheckType::RowCount,
        CheckType::Expression,
        CheckType::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::NotNull => "not_null",
            CheckType::Unique => "unique",
            CheckType::AcceptedValues => "accepted_values",
            CheckType::Relationships => "relationships",
            CheckType::RowCount => "row_count",
            CheckType::Expression => "expression",
            CheckType::Query => "query",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure fails the flow: nothing is published.
    Error,
    /// A failure is logged and reported; the flow may still complete.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

/// A validated check, as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub name: String,
    pub node: String,
    #[serde(rename = "type")]
    pub check_type: CheckType,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The nodes the check reads: its node first, then `to` or the nodes its SQL names.
    #[serde(skip)]
    pub reads: Vec<String>,
}

impl Check {
    /// The nodes the check reads (its node first).
    pub fn reads(&self) -> Vec<String> {
        if !self.reads.is_empty() {
            return self.reads.clone();
        }
        let mut reads = vec![self.node.clone()];
        if let Some(to) = &self.to {
            if to != &self.node {
                reads.push(to.clone());
            }
        }
        if let Some(sql) = self.sql.as_deref() {
            let text = match self.check_type {
                CheckType::Expression => expression_query(&self.node, sql),
                _ => sql.to_string(),
            };
            for r in analyze_query(&text).unwrap_or_default() {
                if !reads.contains(&r.name) {
                    reads.push(r.name);
                }
            }
        }
        reads
    }

    /// The columns of each node the check names, which must exist when it runs.
    pub fn named_columns(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .columns
            .iter()
            .chain(self.column.iter())
            .map(|c| (self.node.as_str(), c.as_str()))
            .collect();
        if let (Some(to), Some(c)) = (&self.to, &self.to_column) {
            out.push((to.as_str(), c.as_str()));
        }
        out
    }

    /// The query whose rows are the check's failing rows (for `unique`, one row per
    /// duplicated key with its `count`; for `row_count`, one row with the count when it is out
    /// of range).
    pub fn failing_rows_sql(&self) -> String {
        let node = &self.node;
        match self.check_type {
            CheckType::NotNull => {
                let test = self
                    .columns
                    .iter()
                    .map(|c| format!("{} IS NULL", ident(c)))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                format!("SELECT * FROM {node} WHERE {test}")
            }
            CheckType::Unique => {
                // Like a UNIQUE constraint: a key with a NULL in it equals no other key.
                let cols = self.columns.iter().map(|c| ident(c)).collect::<Vec<_>>();
                let not_null = cols
                    .iter()
                    .map(|c| format!("{c} IS NOT NULL"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let list = cols.join(", ");
                // Each duplicated key with its number of rows, as `count` (unless a key
                // column has that name).
                let count = if self.columns.iter().any(|c| c == "count") {
                    "duplicate_rows"
                } else {
                    "count"
                };
                format!(
                    "SELECT {list}, count(*) AS {count} FROM {node} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1"
                )
            }
            CheckType::AcceptedValues => {
                let column = ident(self.column.as_deref().unwrap_or_default());
                let values = self.values.iter().map(literal).collect::<Vec<_>>().join(", ");
                format!("SELECT * FROM {node} WHERE {column} IS NOT NULL AND {column} NOT IN ({values})")
            }
            CheckType::Relationships => {
                let column = ident(self.column.as_deref().unwrap_or_default());
                let to = self.to.as_deref().unwrap_or_default();
                let to_column = ident(self.to_column.as_deref().unwrap_or_default());
                format!(
                    "SELECT * FROM {node} AS __child WHERE __child.{column} IS NOT NULL AND NOT EXISTS \
                     (SELECT 1 FROM {to} AS __parent WHERE __parent.{to_column} = __child.{column})"
                )
            }
            CheckType::RowCount => {
                let mut out_of_range = Vec::new();
                if let Some(min) = self.min {
                    out_of_range.push(format!("row_count < {min}"));
                }
                if let Some(max) = self.max {
                    out_of_range.push(format!("row_count > {max}"));
                }
                format!(
                    "SELECT row_count FROM (SELECT count(*) AS row_count FROM {node}) AS __counted WHERE {}",
                    out_of_range.join(" OR ")
                )
            }
            CheckType::Expression => expression_query(node, self.sql.as_deref().unwrap_or_default()),
            CheckType::Query => self.sql.clone().unwrap_or_default(),
        }
    }

    /// What failed, for people: `3 rows with a NULL in order_id`, `0 rows; expected at least 1`.
    pub fn failure_summary(
        &self,
        failing_rows: u64,
        sample: &[serde_json::Map<String, serde_json::Value>],
    ) -> String {
        let rows = |n: u64| {
            if n == 1 {
                "1 row".to_string()
            } else {
                format!("{n} rows")
            }
        };
        let list = |cols: &[String]| cols.join(", ");
        match self.check_type {
            CheckType::NotNull => format!("{} with a NULL in {}", rows(failing_rows), list(&self.columns)),
            CheckType::Unique => {
                let keys = if failing_rows == 1 {
                    "1 duplicated key"
                } else {
                    "duplicated keys"
                };
                if failing_rows == 1 {
                    format!("{keys} of ({})", list(&self.columns))
                } else {
                    format!("{failing_rows} {keys} of ({})", list(&self.columns))
                }
            }
            CheckType::AcceptedValues => format!(
                "{} whose {} is not one of {}",
                rows(failing_rows),
                self.column.as_deref().unwrap_or_default(),
                serde_json::Value::Array(self.values.clone())
            ),
            CheckType::Relationships => format!(
                "{} whose {} is not in {}.{}",
                rows(failing_rows),
                self.column.as_deref().unwrap_or_default(),
                self.to.as_deref().unwrap_or_default(),
                self.to_column.as_deref().unwrap_or_default()
            ),
            CheckType::RowCount => {
                let count = sample
                    .first()
                    .and_then(|r| r.get("row_count"))
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into());
                let expected = match (self.min, self.max) {
                    (Some(min), Some(max)) => format!("between {min} and {max}"),
                    (Some(min), None) => format!("at least {min}"),
                    (None, Some(max)) => format!("at most {max}"),
                    (None, None) => "any number".into(),
                };
                format!("{} has {count} rows; expected {expected}", self.node)
            }
            CheckType::Expression => format!(
                "{} where NOT ({})",
                rows(failing_rows),
                self.sql.as_deref().unwrap_or_default()
            ),
            CheckType::Query => format!("its query returned {}", rows(failing_rows)),
        }
    }
}

/// `expression`'s query: the rows for which the expression is false (NULL passes, as in a
/// SQL CHECK constraint).
fn expression_query(node: &str, expression: &str) -> String {
    format!("SELECT * FROM {node} WHERE NOT ({expression})")
}

/// A column name as a quoted SQL identifier: it names the column exactly as the result has it.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A JSON scalar as a SQL literal.
fn literal(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        serde_json::Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => "NULL".to_string(),
    }
}

/// Cuts a text value longer than `MAX_SAMPLE_VALUE_CHARS` characters.
pub fn cut_value(text: &str) -> String {
    if text.chars().count() <= MAX_SAMPLE_VALUE_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX_SAMPLE_VALUE_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// The line a failed check adds: the check, what failed and the first failing values.
pub fn failure_line(
    check: &Check,
    failing_rows: u64,
    sample: &[serde_json::Map<String, serde_json::Value>],
) -> String {
    let summary = check.failure_summary(failing_rows, sample);
    if check.check_type == CheckType::RowCount || sample.is_empty() {
        return format!("check {} failed: {summary}", check.name);
    }
    let first: Vec<String> = sample
        .iter()
        .take(3)
        .map(|row| serde_json::Value::Object(row.clone()).to_string())
        .collect();
    format!(
        "check {} failed: {summary}; first: {}",
        check.name,
        first.join(", ")
    )
}

/// Where validation finds the flow's nodes.
pub struct CheckContext<'a> {
    /// Source and transform names.
    pub nodes: &'a [&'a str],
    /// Every DAG node name so far (sources, transforms, persist nodes), which a check's name
    /// must not repeat.
    pub taken: &'a HashSet<String>,
    pub max_sql_length: usize,
}

/// Validates `checks`, adding every problem (with its path) to `problems`.
pub fn validate_checks(
    requests: Vec<CheckRequest>,
    ctx: &CheckContext<'_>,
    problems: &mut Vec<FieldError>,
) -> Vec<Check> {
    let mut checks = Vec::with_capacity(requests.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, r) in requests.into_iter().enumerate() {
        let at = |field: &str| format!("checks[{i}].{field}");
        let mut add = |path: String, message: String| problems.push(FieldError::new(path, message));
        let known = |name: &str| ctx.nodes.contains(&name);
        let unknown = |name: &str| {
            let hint = did_you_mean_hint(name, ctx.nodes.iter().copied());
            format!("unknown node {name:?}{hint}; a check reads a source or a transform")
        };
        if !known(&r.node) {
            add(at("node"), unknown(&r.node));
        }
        let Some(check_type) = CheckType::parse(&r.check_type) else {
            let all: Vec<&str> = CheckType::ALL.iter().map(|t| t.as_str()).collect();
            let hint = did_you_mean_hint(&r.check_type, all.iter().copied());
            add(
                at("type"),
                format!(
                    "unknown check type {:?}{hint}: use {}",
                    r.check_type,
                    all.join(", ")
                ),
            );
            continue;
        };
        let severity = match r.severity.as_deref() {
            None | Some("error") => Severity::Error,
            Some("warn") => Severity::Warn,
            Some(other) => {
                add(
                    at("severity"),
                    format!("unknown severity {other:?}: use error or warn"),
                );
                Severity::Error
            }
        };
        // Which fields each type takes.
        let takes: &[&str] = match check_type {
            CheckType::NotNull | CheckType::Unique => &["columns", "column"],
            CheckType::AcceptedValues => &["column", "values"],
            CheckType::Relationships => &["column", "to", "to_column"],
            CheckType::RowCount => &["min", "max"],
            CheckType::Expression | CheckType::Query => &["sql"],
        };
        let given = [
            ("columns", r.columns.is_some()),
            ("column", r.column.is_some()),
            ("values", r.values.is_some()),
            ("to", r.to.is_some()),
            ("to_column", r.to_column.is_some()),
            ("min", r.min.is_some()),
            ("max", r.max.is_some()),
            ("sql", r.sql.is_some()),
        ];
        for (field, present) in given {
            if present && !takes.contains(&field) {
                add(
                    at(field),
                    format!(
                        "a {} check takes no {field} (it takes {})",
                        check_type.as_str(),
                        takes.join(", ")
                    ),
                );
            }
        }
        let mut problems_here: Vec<(String, String)> = Vec::new();
        let mut column_ok = |path: String, name: &str| {
            if name.trim().is_empty() {
                add(path, "a column name must not be empty".into());
            } else if name.chars().count() > 255 {
                add(path, "a column name has at most 255 characters".into());
            }
        };
        let mut columns = Vec::new();
        let mut column = None;
        match check_type {
            CheckType::NotNull | CheckType::Unique => match (r.columns, r.column) {
                (Some(_), Some(_)) => {
                    problems_here.push((at("column"), "give columns or column, not both".into()))
                }
                (Some(list), None) => {
                    for (j, c) in list.iter().enumerate() {
                        column_ok(format!("checks[{i}].columns[{j}]"), c);
                    }
                    columns = list;
                }
                (None, Some(c)) => {
                    column_ok(at("column"), &c);
                    columns = vec![c];
                }
                (None, None) => {}
            },
            CheckType::AcceptedValues | CheckType::Relationships => {
                if let Some(c) = &r.column {
                    column_ok(at("column"), c);
                }
                column = r.column;
            }
            _ => {}
        }
        let need = |field: &str, what: &str| (at(field), what.to_string());
        if matches!(check_type, CheckType::NotNull | CheckType::Unique) && columns.is_empty() {
            problems_here.push(need("columns", "give one or more columns"));
        }
        if matches!(check_type, CheckType::AcceptedValues | CheckType::Relationships) && column.is_none() {
            problems_here.push(need("column", "give the column to check"));
        }
        let mut values = Vec::new();
        if check_type == CheckType::AcceptedValues {
            match r.values {
                None => problems_here.push(need("values", "give the accepted values")),
                Some(list) if list.is_empty() => {
                    problems_here.push(need("values", "give at least one accepted value"))
                }
                Some(list) => {
                    for (j, v) in list.iter().enumerate() {
                        if !(v.is_string() || v.is_number() || v.is_boolean()) {
                            problems_here.push((
                                format!("checks[{i}].values[{j}]"),
                                "an accepted value is a string, a number or a boolean".into(),
                            ));
                        }
                    }
                    values = list;
                }
            }
        }
        let mut to = None;
        let mut to_column = None;
        if check_type == CheckType::Relationships {
            match r.to {
                None => problems_here.push(need("to", "give the node that holds the parent keys")),
                Some(t) => {
                    if !known(&t) {
                        problems_here.push((at("to"), unknown(&t)));
                    }
                    to = Some(t);
                }
            }
            match r.to_column {
                None => problems_here.push(need("to_column", "give the column of `to` that holds the keys")),
                Some(c) if c.trim().is_empty() => {
                    problems_here.push(need("to_column", "a column name must not be empty"))
                }
                Some(c) => to_column = Some(c),
            }
        }
        let mut bound = |field: &str, value: Option<i64>| -> Option<u64> {
            match value {
                None => None,
                Some(v) if v >= 0 => Some(v as u64),
                Some(v) => {
                    problems_here.push((
                        at(field),
                        format!("{v} is out of range: a row count is 0 or more"),
                    ));
                    None
                }
            }
        };
        let (min, max) = if check_type == CheckType::RowCount {
            (bound("min", r.min), bound("max", r.max))
        } else {
            (None, None)
        };
        if check_type == CheckType::RowCount {
            if r.min.is_none() && r.max.is_none() {
                problems_here.push((at("min"), "give min, max or both".into()));
            }
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo > hi {
                    problems_here.push((at("max"), format!("max ({hi}) is less than min ({lo})")));
                }
            }
        }
        let mut reads = vec![r.node.clone()];
        if let Some(t) = &to {
            if t != &r.node {
                reads.push(t.clone());
            }
        }
        let mut sql = None;
        if matches!(check_type, CheckType::Expression | CheckType::Query) {
            match r.sql {
                None => problems_here.push((at("sql"), "give the SQL".into())),
                Some(text) if text.trim().is_empty() => {
                    problems_here.push((at("sql"), "must not be empty".into()))
                }
                Some(text) if text.chars().count() > ctx.max_sql_length => problems_here.push((
                    at("sql"),
                    format!("at most {} characters are allowed", ctx.max_sql_length),
                )),
                Some(text) => {
                    let analyzed = if check_type == CheckType::Expression {
                        check_expression(&text).and_then(|()| {
                            analyze_query(&expression_query(&r.node, &text)).map_err(|p| p.message)
                        })
                    } else {
                        analyze_query(&text).map_err(|p| p.to_string())
                    };
                    match analyzed {
                        Err(message) => problems_here.push((at("sql"), message)),
                        Ok(refs) => {
                            for t in refs {
                                let place = t.position.map(|p| format!(" (at {p})")).unwrap_or_default();
                                if t.qualified || !known(&t.name) {
                                    let hint = did_you_mean_hint(&t.name, ctx.nodes.iter().copied());
                                    problems_here.push((
                                        at("sql"),
                                        format!("unknown table {:?}{place}{hint}; a check can read the flow's sources and transforms", t.name),
                                    ));
                                } else if !reads.contains(&t.name) {
                                    reads.push(t.name);
                                }
                            }
                        }
                    }
                    sql = Some(text);
                }
            }
        }
        for (path, message) in problems_here {
            add(path, message);
        }
        let name = match r.name {
            Some(name) => {
                if name.trim().is_empty() || name.chars().count() > MAX_CHECK_NAME_CHARS {
                    add(
                        at("name"),
                        format!("a check's name has 1 to {MAX_CHECK_NAME_CHARS} characters"),
                    );
                } else if name.chars().any(char::is_control) {
                    add(
                        at("name"),
                        "a check's name must not hold control characters".into(),
                    );
                }
                name
            }
            None => default_name(check_type, &r.node, &columns, column.as_deref()),
        };
        if ctx.taken.contains(&name) {
            add(
                at("name"),
                format!("{name:?} is already the name of a node of the flow"),
            );
        } else if let Some(first) = names.get(&name) {
            add(
                at("name"),
                format!(
                    "duplicate check name {name:?}: already used by checks[{first}]; give one of them a name"
                ),
            );
        } else {
            names.insert(name.clone(), i);
        }
        checks.push(Check {
            name,
            node: r.node,
            check_type,
            severity,
            columns,
            column,
            values,
            to,
            to_column,
            min,
            max,
            sql,
            reads,
        });
    }
    checks
}

/// `type(node.columns)`: `unique(stg_orders.order_id)`, `not_null(stg.a,b)`, `row_count(fct)`.
fn default_name(check_type: CheckType, node: &str, columns: &[String], column: Option<&str>) -> String {
    let cols: Vec<&str> = columns.iter().map(String::as_str).chain(column).collect();
    if cols.is_empty() {
        format!("{}({node})", check_type.as_str())
    } else {
        format!("{}({node}.{})", check_type.as_str(), cols.join(","))
    }
}

/// An `expression` is one SQL expression (not a query, not two expressions).
fn check_expression(text: &str) -> Result<(), String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| format!("SQL error: {e}"))?;
    parser
        .parse_expr()
        .map_err(|e| format!("not a SQL expression: {e}"))?;
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(format!(
            "one boolean SQL expression is expected; found {other} after it (a query check takes a query)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(checks: serde_json::Value) -> (Vec<Check>, Vec<FieldError>) {
        let requests: Vec<CheckRequest> = serde_json::from_value(checks).unwrap();
        let nodes = ["orders", "stg_orders", "dim_customers"];
        let taken: HashSet<String> = ["orders", "stg_orders", "dim_customers", "stg_orders->t"]
            .into_iter()
            .map(String::from)
            .collect();
        let ctx = CheckContext {
            nodes: &nodes,
            taken: &taken,
            max_sql_length: 1000,
        };
        let mut problems = Vec::new();
        let checks = validate_checks(requests, &ctx, &mut problems);
        (checks, problems)
    }

    #[test]
    fn default_names_and_reads() {
        let (checks, problems) = validate(json!([
            {"node": "stg_orders", "type": "unique", "columns": ["order_id"]},
            {"node": "stg_orders", "type": "not_null", "columns": ["order_id", "customer_id"], "severity": "warn"},
            {"node": "stg_orders", "type": "relationships", "column": "customer_id", "to": "dim_customers", "to_column": "id"},
            {"node": "stg_orders", "type": "row_count", "min": 1},
            {"node": "stg_orders", "type": "query", "name": "q", "sql": "SELECT * FROM stg_orders s JOIN orders o USING (order_id)"}
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "unique(stg_orders.order_id)",
                "not_null(stg_orders.order_id,customer_id)",
                "relationships(stg_orders.customer_id)",
                "row_count(stg_orders)",
                "q"
            ]
        );
        assert_eq!(checks[1].severity, Severity::Warn);
        assert_eq!(checks[2].reads, ["stg_orders", "dim_customers"]);
        assert_eq!(checks[4].reads, ["stg_orders", "orders"]);
        let stored = serde_json::to_value(&checks[4]).unwrap();
        let back: Check = serde_json::from_value(stored).unwrap();
        assert_eq!(back.reads(), ["stg_orders", "orders"]);
    }

    #[test]
    fn every_problem_with_its_path() {
        let (_, problems) = validate(json!([
            {"node": "stg_ordrs", "type": "unique", "columns": ["order_id"]},
            {"node": "stg_orders", "type": "uniq", "columns": ["a"]},
            {"node": "stg_orders", "type": "not_null", "severity": "fatal"},
            {"node": "stg_orders", "type": "relationships", "column": "c", "to": "dim_customer"},
            {"node": "stg_orders", "type": "row_count", "min": 5, "max": 2, "columns": ["x"]},
            {"node": "stg_orders", "type": "expression", "sql": "amount >= 0 amount"},
            {"node": "stg_orders", "type": "query", "sql": "DELETE FROM stg_orders"},
            {"node": "stg_orders", "type": "query", "name": "orders", "sql": "SELECT * FROM ordrs"},
            {"node": "orders", "type": "unique", "column": "id"},
            {"node": "orders", "type": "unique", "columns": ["id"]}
        ]));
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "checks[0].node",
                "checks[1].type",
                "checks[2].severity",
                "checks[2].columns",
                "checks[3].to",
                "checks[3].to_column",
                "checks[4].columns",
                "checks[4].max",
                "checks[5].sql",
                "checks[6].sql",
                "checks[7].sql",
                "checks[7].name",
                "checks[9].name",
            ],
            "{problems:#?}"
        );
        let message = |i: usize| problems[i].message.as_str();
        assert!(
            message(0).contains("did you mean \"stg_orders\""),
            "{}",
            message(0)
        );
        assert!(message(1).contains("did you mean \"unique\""), "{}", message(1));
        assert!(
            message(4).contains("did you mean \"dim_customers\""),
            "{}",
            message(4)
        );
        assert!(message(10).contains("did you mean \"orders\""), "{}", message(10));
        assert!(message(12).contains("checks[8]"), "{}", message(12));
    }

    #[test]
    fn the_sql_of_each_type() {
        let (checks, problems) = validate(json!([
            {"node": "orders", "type": "accepted_values", "column": "status", "values": ["it's", 1, true]},
            {"node": "orders", "type": "unique", "columns": ["a", "b\"c"]},
            {"node": "orders", "type": "row_count", "min": 1, "max": 10}
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            checks[0].failing_rows_sql(),
            "SELECT * FROM orders WHERE \"status\" IS NOT NULL AND \"status\" NOT IN ('it''s', 1, TRUE)"
        );
        assert_eq!(
            checks[1].failing_rows_sql(),
            "SELECT \"a\", \"b\"\"c\", count(*) AS count FROM orders WHERE \"a\" IS NOT NULL AND \"b\"\"c\" IS NOT NULL GROUP BY \"a\", \"b\"\"c\" HAVING count(*) > 1"
        );
        for c in &checks {
            analyze_query(&c.failing_rows_sql()).unwrap();
        }
        let sample: Vec<serde_json::Map<String, serde_json::Value>> =
            vec![json!({"row_count": 0}).as_object().unwrap().clone()];
        assert_eq!(
            failure_line(&checks[2], 1, &sample),
            "check row_count(orders) failed: orders has 0 rows; expected between 1 and 10"
        );
        assert_eq!(
            cut_value(&"x".repeat(150)).chars().count(),
            MAX_SAMPLE_VALUE_CHARS + 1
        );
    }
}
