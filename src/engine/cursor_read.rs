//! Reading a cursor source: the connector pushes `cursor >= mark` into the source query (see
//! `connectors::CursorFilter`); the stream it returns passes through `CursorRead`, which skips
//! the rows at the mark that the previous flow already read (by fingerprint), skips and counts
//! rows whose cursor is NULL (only a read without a mark sees them), and keeps what the flow
//! read: rows, the largest cursor value and the fingerprints of the rows at that value.
//! The entry is final once the stream ended; the task then records it (see
//! `domain::cursor` for the guarantee this gives).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::connectors::{ConnectorError, CursorFilter};
use crate::domain::cursor::{
    cursor_type_ok, fingerprint, value_at, CursorEntry, CursorStart, CursorValue, FileMark,
};

/// Keeps the boundary of a read at most this big; beyond it, rows at the mark are read again
/// by the next flow (so an append output could see them twice; a merge output cannot).
pub const MAX_BOUNDARY_ROWS: usize = 10_000;

/// Why a cursor source cannot be read, or its rows not watched. Permanent: the source, its
/// columns or its mark are what they are.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// `hint` is empty or ` (did you mean "..."?)`.
    #[error("cursor column {column:?}{hint} is not a column of source {source_name}")]
    NoSuchColumn {
        column: String,
        hint: String,
        source_name: String,
    },
    #[error(
        "cursor column {column:?} of source {source_name} is {data_type}: a cursor is an integer, \
         decimal, date or timestamp column"
    )]
    WrongType {
        column: String,
        source_name: String,
        data_type: DataType,
    },
    /// The mark the previous read left does not fit the column's type.
    #[error("source {source_name}: {reason}")]
    BadMark { source_name: String, reason: String },
    #[error("fingerprinting rows: {0}")]
    Fingerprint(#[source] ArrowError),
    /// Leaving out the rows read before.
    #[error(transparent)]
    Filter(ArrowError),
}

impl From<CursorError> for ConnectorError {
    fn from(e: CursorError) -> Self {
        ConnectorError::permanent(e.to_string()).caused_by(e)
    }
}

/// One cursor source of a unit: where it starts, and (once read) what it read.
#[derive(Debug)]
pub struct CursorRead {
    pub source: String,
    pub column: String,
    pub start: CursorStart,
    read: Mutex<Option<CursorEntry>>,
}

impl CursorRead {
    pub fn new(source: &str, column: &str, start: CursorStart) -> Arc<Self> {
        Arc::new(CursorRead {
            source: source.to_string(),
            column: column.to_string(),
            start,
            read: Mutex::new(None),
        })
    }

    /// What the connector pushes into its query.
    pub fn filter(&self) -> CursorFilter {
        CursorFilter {
            column: self.column.clone(),
            after: self.start.after.clone(),
        }
    }

    /// Whether this is a `new_files` source (the start holds the files read before).
    pub fn reads_files(&self) -> bool {
        self.start.files.is_some()
    }

    /// A `new_files` source opened `files` (its rows are counted by the node's tracker).
    pub fn read_files(&self, files: Vec<FileMark>) {
        if let Ok(mut read) = self.read.lock() {
            *read = Some(CursorEntry::of_files(files, 0));
        }
    }

    /// What the last complete read of the source read.
    pub fn entry(&self) -> Option<CursorEntry> {
        self.read.lock().ok().and_then(|r| r.clone())
    }

    /// `input` (the connector's rows, already filtered by `filter`), watched.
    pub fn watch(
        self: &Arc<Self>,
        input: SendableRecordBatchStream,
    ) -> Result<SendableRecordBatchStream, CursorError> {
        let schema = input.schema();
        let index = schema
            .fields()
            .iter()
            .position(|f| f.name() == &self.column)
            .ok_or_else(|| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                CursorError::NoSuchColumn {
                    column: self.column.clone(),
                    hint: crate::domain::names::did_you_mean_hint(&self.column, names.iter().copied()),
                    source_name: self.source.clone(),
                }
            })?;
        let dt = schema.field(index).data_type().clone();
        if !cursor_type_ok(&dt) {
            return Err(CursorError::WrongType {
                column: self.column.clone(),
                source_name: self.source.clone(),
                data_type: dt,
            });
        }
        let after = match &self.start.after {
            serde_json::Value::Null => None,
            json => Some(
                CursorValue::from_json(json, &dt).map_err(|reason| CursorError::BadMark {
                    source_name: self.source.clone(),
                    reason,
                })?,
            ),
        };
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(CursorError::Fingerprint)?;
        let state = ReadState {
            index,
            after,
            skip: self.start.boundary.clone(),
            converter,
            max: after,
            boundary: if after.is_some() {
                self.start.boundary.clone()
            } else {
                BTreeSet::new()
            },
            rows: 0,
            null_rows: 0,
        };
        let me = Arc::clone(self);
        let stream = futures::stream::unfold(Some((input, state)), move |s| {
            let me = Arc::clone(&me);
            async move {
                let (mut input, mut state) = s?;
                match input.next().await {
                    None => {
                        me.finish(&state);
                        None
                    }
                    Some(Err(e)) => Some((Err(e), None)),
                    Some(Ok(batch)) => match state.take(&batch) {
                        Ok(kept) => Some((Ok(kept), Some((input, state)))),
                        Err(e) => Some((Err(DataFusionError::External(Box::new(e))), None)),
                    },
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn finish(&self, state: &ReadState) {
        let entry = CursorEntry {
            column: self.column.clone(),
            after: self.start.after.clone(),
            through: state
                .max
                .map(CursorValue::to_json)
                .unwrap_or(serde_json::Value::Null),
            rows: state.rows,
            null_rows: state.null_rows,
            boundary: if state.boundary.len() <= MAX_BOUNDARY_ROWS {
                state.boundary.iter().map(|h| format!("{h:016x}")).collect()
            } else {
                Vec::new()
            },
            files: None,
        };
        if let Ok(mut read) = self.read.lock() {
            *read = Some(entry);
        }
    }
}

/// The file in a flow's work directory that keeps what cursor source `source` read.
fn saved_path(work_dir: &Path, source: &str) -> PathBuf {
    work_dir.join(format!("cursor-{source}.json"))
}

/// Keeps what a cursor source read in the flow's work directory, durably: a restarted flow
/// that reuses the unit's work finds it there.
pub fn save(work_dir: &Path, source: &str, entry: &CursorEntry) -> std::io::Result<()> {
    std::fs::create_dir_all(work_dir)?;
    let staged = crate::connectors::fsutil::StagedFile::new(&saved_path(work_dir, source))?;
    let text = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    std::fs::write(staged.path(), text)?;
    staged.commit()
}

/// What `save` kept, if anything.
pub fn load(work_dir: &Path, source: &str) -> Option<CursorEntry> {
    let bytes = std::fs::read(saved_path(work_dir, source)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

struct ReadState {
    index: usize,
    after: Option<CursorValue>,
    /// Rows at `after` with these fingerprints were read by the previous flow.
    skip: BTreeSet<u64>,
    converter: RowConverter,
    max: Option<CursorValue>,
    /// Fingerprints of the rows read at `max`.
    boundary: BTreeSet<u64>,
    rows: u64,
    null_rows: u64,
}

impl ReadState {
    /// The rows of `batch` this read keeps, noted.
    fn take(&mut self, batch: &RecordBatch) -> Result<RecordBatch, CursorError> {
        let column = batch.column(self.index);
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(CursorError::Fingerprint)?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let Some(value) = value_at(column, row) else {
                self.null_rows += 1;
                keep.push(false);
                continue;
            };
            if self.after.is_some_and(|a| value < a) {
                // The database compared otherwise (it should not): not newer than the mark.
                keep.push(false);
                continue;
            }
            let hash = fingerprint(rows.row(row).as_ref());
            if Some(value) == self.after && self.skip.contains(&hash) {
                keep.push(false);
                continue;
            }
            keep.push(true);
            self.rows += 1;
            match self.max {
                Some(m) if value < m => {}
                Some(m) if value == m => {
                    self.boundary.insert(hash);
                }
                _ => {
                    self.max = Some(value);
                    self.boundary.clear();
                    self.boundary.insert(hash);
                }
            }
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch.clone());
        }
        filter_record_batch(batch, &BooleanArray::from(keep)).map_err(CursorError::Filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn batch(ids: &[Option<i64>], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
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

    async fn read(read: &Arc<CursorRead>, batches: Vec<RecordBatch>) -> Vec<String> {
        let schema = batches[0].schema();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        let mut out = read.watch(input).unwrap();
        let mut names = Vec::new();
        while let Some(b) = out.next().await {
            let b = b.unwrap();
            let col = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            names.extend(col.iter().map(|s| s.unwrap().to_string()));
        }
        names
    }

    #[tokio::test]
    async fn rows_at_the_mark_are_read_once_and_late_ones_are_not_lost() {
        let first = CursorRead::new("s", "v", CursorStart::default());
        let got = read(
            &first,
            vec![
                batch(&[Some(1), None, Some(3)], &["a", "null", "b"]),
                batch(&[Some(3)], &["c"]),
            ],
        )
        .await;
        assert_eq!(got, ["a", "b", "c"]);
        let entry = first.entry().unwrap();
        assert_eq!(
            (entry.rows, entry.null_rows, entry.through.clone()),
            (3, 1, serde_json::Value::from(3))
        );
        assert_eq!(entry.boundary.len(), 2);

        // The next read gets `v >= 3`: b and c again, and d that was committed at 3 later.
        let second = CursorRead::new("s", "v", CursorStart::after(&entry));
        let got = read(
            &second,
            vec![batch(
                &[Some(3), Some(3), Some(3), Some(4)],
                &["b", "c", "d", "e"],
            )],
        )
        .await;
        assert_eq!(got, ["d", "e"]);
        let entry = second.entry().unwrap();
        assert_eq!(
            (entry.rows, entry.through.clone()),
            (2, serde_json::Value::from(4))
        );

        // Nothing new: the mark and its boundary stay.
        let third = CursorRead::new("s", "v", CursorStart::after(&entry));
        let got = read(&third, vec![batch(&[Some(4)], &["e"])]).await;
        assert!(got.is_empty());
        let after_nothing = third.entry().unwrap();
        assert_eq!(after_nothing.through, serde_json::Value::from(4));
        assert_eq!(after_nothing.boundary, entry.boundary);
    }
}
