//! Where a CSV read failed: DataFusion scans byte ranges in parallel, so its line numbers are
//! relative to a range and it does not name the file; the files are read again one by one to
//! say which file and line.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::csv::null_regex;
use crate::connectors::error;
use crate::connectors::ConnectorError;
use crate::domain::spec::CsvOptions;

/// Like `checked_stream`, but a CSV parse error is located precisely (file and line) by
/// re-reading the files sequentially: DataFusion scans byte ranges in parallel, so its own
/// line numbers are relative to a range and it does not name the file.
pub(super) fn csv_checked_stream(
    stream: SendableRecordBatchStream,
    files: Vec<PathBuf>,
    o: CsvOptions,
    schema: Schema,
) -> SendableRecordBatchStream {
    let out_schema = stream.schema();
    let mapped =
        stream.then(move |r| {
            let (files, o, schema) = (files.clone(), o.clone(), schema.clone());
            async move {
                r.map_err(|e| DataFusionError::External(Box::new(csv_error(e, &files, &o, Some(&schema)))))
            }
        });
    Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped))
}

pub(super) fn csv_error(
    e: DataFusionError,
    files: &[PathBuf],
    o: &CsvOptions,
    schema: Option<&Schema>,
) -> ConnectorError {
    let text = error::clean_message(&e);
    if is_parse_error(&e) {
        if let Some(located) = locate_csv_error(files, o, schema) {
            return ConnectorError::permanent(located);
        }
    }
    ConnectorError::permanent(format!("reading csv: {text}"))
}

/// Whether `e` is the CSV reader's complaint about the text (a record of the wrong width, a
/// value that does not parse), by the Arrow error's kind: then it is worth locating.
fn is_parse_error(e: &DataFusionError) -> bool {
    let arrow_parse_error = |a: &ArrowError| matches!(a, ArrowError::CsvError(_) | ArrowError::ParseError(_));
    match e {
        DataFusionError::ArrowError(inner, _) => arrow_parse_error(inner),
        DataFusionError::External(inner) => inner
            .downcast_ref::<ArrowError>()
            .map(arrow_parse_error)
            .or_else(|| inner.downcast_ref::<DataFusionError>().map(is_parse_error))
            .unwrap_or(false),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => is_parse_error(inner),
        DataFusionError::Shared(inner) => is_parse_error(inner),
        _ => false,
    }
}

/// Reads `files` one by one with the same options until one fails; says which file and line.
pub(super) fn locate_csv_error(files: &[PathBuf], o: &CsvOptions, schema: Option<&Schema>) -> Option<String> {
    use datafusion::arrow::csv::reader::{Format, ReaderBuilder};
    for file in files {
        let open = || std::fs::File::open(file).ok();
        let schema = match schema {
            Some(s) => s.clone(),
            None => {
                let mut format = Format::default()
                    .with_header(o.has_header)
                    .with_delimiter(o.delimiter.as_bytes()[0])
                    .with_quote(o.quote.as_bytes()[0]);
                if let Some(re) = null_regex(&o.null_values).and_then(|r| regex::Regex::new(&r).ok()) {
                    format = format.with_null_regex(re);
                }
                match format.infer_schema(open()?, Some(o.infer_rows)) {
                    Ok((s, _)) => s,
                    Err(e) => {
                        let text = strip_arrow_prefix(&e.to_string());
                        let line = text
                            .rsplit_once(" at line ")
                            .and_then(|(_, l)| l.trim().parse::<usize>().ok());
                        return Some(match line {
                            Some(line) => {
                                format!("{} line {line}: {}", file.display(), describe_csv_problem(&text))
                            }
                            None => format!("{}: {}", file.display(), describe_csv_problem(&text)),
                        });
                    }
                }
            }
        };
        let mut builder = ReaderBuilder::new(Arc::new(schema))
            .with_header(o.has_header)
            .with_delimiter(o.delimiter.as_bytes()[0])
            .with_quote(o.quote.as_bytes()[0])
            .with_batch_size(1);
        if let Some(e) = &o.escape {
            builder = builder.with_escape(e.as_bytes()[0]);
        }
        if let Some(re) = null_regex(&o.null_values).and_then(|r| regex::Regex::new(&r).ok()) {
            builder = builder.with_null_regex(re);
        }
        let reader = builder.build(open()?).ok()?;
        for (record, batch) in reader.enumerate() {
            if let Err(e) = batch {
                // Batches of one record: the record number gives the line (when no quoted field
                // spans lines), counting the header.
                let line = record + 1 + usize::from(o.has_header);
                return Some(format!(
                    "{} line {line}: {}",
                    file.display(),
                    describe_csv_problem(&strip_arrow_prefix(&e.to_string()))
                ));
            }
        }
    }
    None
}

fn strip_arrow_prefix(text: &str) -> String {
    text.trim_start_matches("Csv error: ")
        .trim_start_matches("Parser error: ")
        .to_string()
}

/// Rewords arrow-csv messages whose line numbers count from another origin than ours.
fn describe_csv_problem(text: &str) -> String {
    // "Encountered unequal lengths between records on CSV file. Expected 2 records, found 3 records at line 3"
    if let Some(rest) =
        text.strip_prefix("Encountered unequal lengths between records on CSV file. Expected ")
    {
        let expected: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let found: String = rest
            .split("found ")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return format!("wrong number of fields (expected {expected}, found {found})");
    }
    if let Some(rest) = text.strip_prefix("incorrect number of fields for line ") {
        if let Some((_, counts)) = rest.split_once(", ") {
            return format!("wrong number of fields ({counts})");
        }
    }
    if let Some(at) = text.find(" at line ") {
        // "Error while parsing value 'x' as type 'Int64' for column 2 at line 3. Row data: ..."
        let head = &text[..at];
        return head.replace("Error while parsing value", "cannot parse value");
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_told_by_their_kind_not_their_text() {
        let csv = |e: ArrowError| DataFusionError::ArrowError(Box::new(e), None);
        assert!(is_parse_error(&csv(ArrowError::CsvError(
            "incorrect number of fields".into()
        ))));
        assert!(is_parse_error(&csv(ArrowError::ParseError(
            "Error while parsing value".into()
        ))));
        let external = DataFusionError::External(Box::new(ArrowError::ParseError("x".into())));
        assert!(is_parse_error(&external));
        let wrapped =
            DataFusionError::Context("scan".into(), Box::new(csv(ArrowError::CsvError("x".into()))));
        assert!(is_parse_error(&wrapped));
        // Words in a message do not make it a parse error.
        assert!(!is_parse_error(&DataFusionError::Execution(
            "CSV line 3 parsing".into()
        )));
        assert!(!is_parse_error(&csv(ArrowError::IoError(
            "line".into(),
            std::io::Error::other("x")
        ))));
    }
}
