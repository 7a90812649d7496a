//! Running one check (see `domain::checks`) in a unit's context: its columns must exist (an
//! unknown one fails the check with a hint), then its one query runs over every partition at
//! once, counting the failing rows batch by batch and keeping the first few as the sample
//! (no row-by-row work but for those few rows).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::unit::query_only;
use crate::connectors::error;
use crate::domain::checks::{cut_value, Check, MAX_SAMPLE_ROWS};
use crate::domain::names::did_you_mean_hint;

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// Failing rows (for `unique`, duplicated keys).
    pub failing_rows: u64,
    /// The first failing rows, at most `MAX_SAMPLE_ROWS`, long values cut.
    pub sample: Vec<Map<String, Value>>,
    /// The check could not run as written (an unknown column, a SQL error in it).
    pub problem: Option<String>,
}

impl CheckOutcome {
    fn problem(message: String) -> Self {
        CheckOutcome {
            failing_rows: 0,
            sample: vec![],
            problem: Some(message),
        }
    }

    pub fn passed(&self) -> bool {
        self.problem.is_none() && self.failing_rows == 0
    }
}

/// Runs `check` in `ctx`, where the nodes it reads are registered. An error while the query
/// runs is returned for the caller to blame (an input of the unit may have raised it); a
/// check that cannot run as written is an outcome with a `problem`.
pub async fn evaluate(ctx: &SessionContext, check: &Check) -> Result<CheckOutcome, DataFusionError> {
    for (node, column) in check.named_columns() {
        let df = ctx.table(node).await?;
        let names: Vec<&str> = df.schema().fields().iter().map(|f| f.name().as_str()).collect();
        if !names.contains(&column) {
            let hint = did_you_mean_hint(column, names.iter().copied());
            let mut listed: Vec<&str> = names.iter().copied().take(20).collect();
            if names.len() > listed.len() {
                listed.push("...");
            }
            return Ok(CheckOutcome::problem(format!(
                "check {}: unknown column {column:?} in {node}{hint}; its columns are {}",
                check.name,
                listed.join(", ")
            )));
        }
    }
    let sql = check.failing_rows_sql();
    let df = match ctx.sql_with_options(&sql, query_only()).await {
        Ok(df) => df,
        Err(e) => {
            return Ok(CheckOutcome::problem(format!(
                "check {}: {}",
                check.name,
                error::clean_message(&e)
            )))
        }
    };
    let plan = match df.create_physical_plan().await {
        Ok(plan) => plan,
        Err(e) if error::find_connector_error(&e).is_some() || error::is_resources_exhausted(&e) => {
            return Err(e)
        }
        Err(e) => {
            return Ok(CheckOutcome::problem(format!(
                "check {}: {}",
                check.name,
                error::clean_message(&e)
            )))
        }
    };
    let task = ctx.task_ctx();
    let mut partitions = tokio::task::JoinSet::new();
    for i in 0..plan.output_partitioning().partition_count() {
        let mut stream = plan.execute(i, Arc::clone(&task))?;
        partitions.spawn(async move {
            let mut rows = 0u64;
            let mut kept: Vec<RecordBatch> = Vec::new();
            let mut kept_rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                if kept_rows < MAX_SAMPLE_ROWS && batch.num_rows() > 0 {
                    let take = (MAX_SAMPLE_ROWS - kept_rows).min(batch.num_rows());
                    kept.push(batch.slice(0, take));
                    kept_rows += take;
                }
            }
            Ok::<_, DataFusionError>((i, rows, kept))
        });
    }
    let mut failing_rows = 0;
    let mut kept = Vec::new();
    while let Some(done) = partitions.join_next().await {
        let (i, rows, batches) = done.map_err(|e| DataFusionError::External(Box::new(e)))??;
        failing_rows += rows;
        kept.push((i, batches));
    }
    // The first partitions' rows first, so that one plan gives one sample.
    kept.sort_by_key(|(i, _)| *i);
    let mut sample = Vec::new();
    for batch in kept.into_iter().flat_map(|(_, b)| b) {
        for row in 0..batch.num_rows() {
            if sample.len() < MAX_SAMPLE_ROWS {
                sample.push(row_json(&batch, row));
            }
        }
    }
    Ok(CheckOutcome {
        failing_rows,
        sample,
        problem: None,
    })
}

/// One row of `batch` as a JSON object: numbers and booleans as such, anything else as its
/// text, cut when long.
fn row_json(batch: &RecordBatch, row: usize) -> Map<String, Value> {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| (field.name().clone(), value_json(column, row)))
        .collect()
}

fn value_json(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    if let DataType::Boolean = column.data_type() {
        if let Some(b) = column.as_any().downcast_ref::<BooleanArray>() {
            return Value::Bool(b.value(row));
        }
    }
    let options = FormatOptions::default();
    let text = match ArrayFormatter::try_new(column.as_ref(), &options) {
        Ok(f) => f.value(row).to_string(),
        Err(_) => return Value::String(format!("<{}>", column.data_type())),
    };
    match column.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => text
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(text)),
        _ => Value::String(cut_value(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn sample_rows_keep_numbers_and_cut_long_text() {
        let long = "y".repeat(150);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("x", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(StringArray::from(vec![Some(long.as_str()), Some("short")])),
                Arc::new(BooleanArray::from(vec![Some(true), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1234), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let first = Value::Object(row_json(&batch, 0));
        assert_eq!(
            first,
            serde_json::json!({"id": 7, "text": format!("{}…", "y".repeat(100)), "ok": true, "x": 1.5, "amount": "12.34"})
        );
        let second = Value::Object(row_json(&batch, 1));
        assert_eq!(
            second,
            serde_json::json!({"id": null, "text": "short", "ok": null, "x": "NaN", "amount": null})
        );
    }
}
