//! The key of a `merge` output, checked on the result before anything is staged: every key
//! column exists, no key is NULL, and no key appears twice. The check watches the rows on their
//! way to the sink: the first bad row does not stop the stream at once (so the message can
//! count every duplicate), but no batch after it reaches the sink, and the stream ends with the
//! error, so the sink rolls its staging back and the target stays as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::domain::names::did_you_mean_hint;

/// Why the key of a merge output cannot be checked. Permanent: the output's spec or its
/// result's columns must change.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `missing` holds each missing key column, quoted, with its did-you-mean hint.
    #[error(
        "unique_key column {} is not in the result of {node}, whose columns are {}",
        .missing.join(", "),
        .columns.join(", ")
    )]
    Missing {
        missing: Vec<String>,
        node: String,
        columns: Vec<String>,
    },
    #[error("comparing keys: {0}")]
    Compare(#[source] ArrowError),
}

/// The positions of the key columns in `schema`, or what is wrong with them.
pub fn key_columns(schema: &Schema, keys: &[String], node: &str) -> Result<Vec<usize>, KeyError> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut indices = Vec::with_capacity(keys.len());
    let mut problems = Vec::new();
    for key in keys {
        match names.iter().position(|n| n == key) {
            Some(i) => indices.push(i),
            None => {
                let hint = did_you_mean_hint(key, names.iter().copied());
                problems.push(format!("{key:?}{hint}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(indices)
    } else {
        Err(KeyError::Missing {
            missing: problems,
            node: node.to_string(),
            columns: names.iter().map(|n| n.to_string()).collect(),
        })
    }
}

/// Watches the keys of a result go by.
struct KeyCheck {
    node: String,
    keys: Vec<String>,
    indices: Vec<usize>,
    converter: RowConverter,
    /// Each key seen, and whether it was seen more than once.
    seen: HashMap<Box<[u8]>, bool>,
    duplicates: u64,
    duplicate_example: Option<String>,
    null_rows: u64,
    null_example: Option<String>,
}

impl KeyCheck {
    fn new(schema: &Schema, keys: &[String], node: &str) -> Result<Self, KeyError> {
        let indices = key_columns(schema, keys, node)?;
        let fields = indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(KeyError::Compare)?;
        Ok(KeyCheck {
            node: node.to_string(),
            keys: keys.to_vec(),
            indices,
            converter,
            seen: HashMap::new(),
            duplicates: 0,
            duplicate_example: None,
            null_rows: 0,
            null_example: None,
        })
    }

    fn observe(&mut self, batch: &RecordBatch) -> Result<(), KeyError> {
        let columns: Vec<ArrayRef> = self
            .indices
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let rows = self
            .converter
            .convert_columns(&columns)
            .map_err(KeyError::Compare)?;
        for row in 0..batch.num_rows() {
            if let Some(null) = columns.iter().position(|c| c.is_null(row)) {
                self.null_rows += 1;
                if self.null_example.is_none() {
                    self.null_example = Some(self.keys[null].clone());
                }
                continue;
            }
            match self.seen.get_mut(rows.row(row).as_ref()) {
                Some(twice) => {
                    if !*twice {
                        *twice = true;
                        self.duplicates += 1;
                        if self.duplicate_example.is_none() {
                            self.duplicate_example = Some(self.describe(&columns, row));
                        }
                    }
                }
                None => {
                    self.seen.insert(rows.row(row).as_ref().into(), false);
                }
            }
        }
        Ok(())
    }

    /// `order_id=17, line='a'`.
    fn describe(&self, columns: &[ArrayRef], row: usize) -> String {
        self.keys
            .iter()
            .zip(columns)
            .map(|(name, column)| {
                let text = array_value_to_string(column, row).unwrap_or_else(|_| "?".into());
                let quoted = matches!(
                    column.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                );
                if quoted {
                    format!("{name}='{}'", text.replace('\'', "''"))
                } else {
                    format!("{name}={text}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn problem(&self) -> Option<String> {
        let mut problems = Vec::new();
        if self.duplicates > 0 {
            let plural = if self.duplicates == 1 { "" } else { "s" };
            problems.push(format!(
                "{} duplicate key{plural} in the result of {}, e.g. {}",
                self.duplicates,
                self.node,
                self.duplicate_example.as_deref().unwrap_or("?")
            ));
        }
        if self.null_rows > 0 {
            let plural = if self.null_rows == 1 { "" } else { "s" };
            problems.push(format!(
                "{} row{plural} of the result of {} with a NULL key, e.g. {} IS NULL",
                self.null_rows,
                self.node,
                self.null_example.as_deref().unwrap_or("?")
            ));
        }
        if problems.is_empty() {
            return None;
        }
        Some(format!(
            "{}: a merge output needs each unique_key ({}) at most once and never NULL; nothing was staged",
            problems.join("; "),
            self.keys.join(", ")
        ))
    }
}

/// What the check found, once the stream failed because of it.
pub type KeyProblem = Arc<Mutex<Option<String>>>;

/// `input`, checked: batches pass through until a key is NULL or seen twice; then the rest of
/// the input is read (to count every problem) and the stream ends with an error, which is also
/// left in the returned slot so the caller can tell it from the sink's own errors.
pub fn checked(
    input: SendableRecordBatchStream,
    keys: &[String],
    node: &str,
) -> Result<(SendableRecordBatchStream, KeyProblem), KeyError> {
    let schema = input.schema();
    let check = KeyCheck::new(&schema, keys, node)?;
    let slot: KeyProblem = Arc::new(Mutex::new(None));
    let found = Arc::clone(&slot);
    let stream = futures::stream::unfold(Some((input, check)), move |state| {
        let found = Arc::clone(&found);
        async move {
            let (mut input, mut check) = state?;
            loop {
                let batch = match input.next().await {
                    None => break,
                    Some(Err(e)) => return Some((Err(e), None)),
                    Some(Ok(batch)) => batch,
                };
                if let Err(e) = check.observe(&batch) {
                    return Some((Err(DataFusionError::External(Box::new(e))), None));
                }
                if check.problem().is_none() {
                    return Some((Ok(batch), Some((input, check))));
                }
            }
            let problem = check.problem()?;
            if let Ok(mut slot) = found.lock() {
                *slot = Some(problem.clone());
            }
            Some((Err(DataFusionError::Execution(problem)), None))
        }
    });
    Ok((Box::pin(RecordBatchStreamAdapter::new(schema, stream)), slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    fn batch(ids: &[Option<i64>], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("line", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    async fn run(batches: Vec<RecordBatch>, keys: &[&str]) -> (usize, Result<(), String>, Option<String>) {
        let schema = batches[0].schema();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let (mut stream, slot) = checked(input, &keys, "fct_orders").unwrap();
        let mut passed = 0;
        let mut result = Ok(());
        while let Some(b) = stream.next().await {
            match b {
                Ok(b) => passed += b.num_rows(),
                Err(e) => result = Err(e.to_string()),
            }
        }
        let found = slot.lock().unwrap().clone();
        (passed, result, found)
    }

    #[tokio::test]
    async fn unique_keys_pass_untouched() {
        let (passed, result, found) = run(
            vec![batch(&[Some(1), Some(2)], &["a", "a"]), batch(&[Some(1)], &["b"])],
            &["order_id", "line"],
        )
        .await;
        assert_eq!((passed, result, found), (3, Ok(()), None));
    }

    #[tokio::test]
    async fn duplicates_are_counted_across_batches_and_stop_the_rows() {
        let (passed, result, found) = run(
            vec![
                batch(&[Some(16), Some(17)], &["a", "b"]),
                batch(&[Some(17), Some(18), Some(17)], &["c", "d", "e"]),
                batch(&[Some(18), Some(19)], &["f", "g"]),
            ],
            &["order_id"],
        )
        .await;
        assert_eq!(passed, 2, "no batch with a duplicate reaches the sink");
        let message = found.unwrap();
        assert!(
            message.starts_with("2 duplicate keys in the result of fct_orders, e.g. order_id=17"),
            "{message}"
        );
        assert!(result.unwrap_err().contains(&message));
    }

    #[tokio::test]
    async fn null_keys_and_composite_examples_are_named() {
        let (_, _, found) = run(
            vec![batch(&[Some(1), None, Some(1)], &["x'y", "a", "x'y"])],
            &["order_id", "line"],
        )
        .await;
        let message = found.unwrap();
        assert!(
            message.starts_with(
                "1 duplicate key in the result of fct_orders, e.g. order_id=1, line='x''y'; \
                 1 row of the result of fct_orders with a NULL key, e.g. order_id IS NULL"
            ),
            "{message}"
        );
    }

    #[test]
    fn missing_key_columns_get_a_hint() {
        let schema = batch(&[], &[]).schema();
        let e = key_columns(&schema, &["order_idd".into()], "fct").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unique_key column \"order_idd\" (did you mean \"order_id\"?) is not in the result of fct, \
             whose columns are order_id, line"
        );
    }
}
