//! The errors of the bottom layers, shared by connectors and the engine: [`ConnectorError`]
//! (what failed, worded for people, and whether another attempt may help) and the wording of
//! DataFusion errors (no category prefixes, connector errors passed through unchanged).
//!
//! It lives in `connectors`, the lowest layer that meets DataFusion errors, and not in the
//! engine: connectors word the errors of the streams they read and write with it, and the
//! engine, above them, uses it too, so both depend only downwards. It knows nothing of flows;
//! [`NodeFailure`] (a DataFusion error tagged with the plan node that raised it) is here only
//! because the wording must see through it.

use std::fmt;
use std::sync::Arc;

use datafusion::error::DataFusionError;

/// Whether another attempt may help: the distinction retries are decided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused or reset, deadlock, serialization failure, too many connections, a
    /// locked database: another attempt may succeed.
    Transient,
    /// The input, the store or the data is wrong: trying again gives the same answer.
    Permanent,
}

/// Why a connector failed, worded for people (the message is all they see), whether trying
/// again may help, and the driver's error it came from when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
    /// The driver's error (its codes classified `kind`); never shown: the message is.
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// This error, caused by `source`.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// A permanent error worded `context: source`, caused by `source`.
    pub fn permanent_from(
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::permanent(format!("{context}: {source}")).caused_by(source)
    }

    /// This error, caused by `source`, an error already boxed (as sqlx's decoders give them).
    pub fn caused_by_boxed(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(Arc::from(source));
        self
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// Equal when they say the same and classify the same (the source is not compared).
impl PartialEq for ConnectorError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for ConnectorError {}

/// A DataFusion error raised inside the plan node `node` (the engine's node boundaries tag
/// errors with it, so a failing inlined node is still named).
#[derive(Debug)]
pub struct NodeFailure {
    pub node: String,
    pub error: DataFusionError,
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

impl std::error::Error for NodeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The innermost meaningful message of `e`, without DataFusion's category prefixes.
pub fn clean_message(e: &DataFusionError) -> String {
    if let Some(c) = find_connector_error(e) {
        return c.message.clone();
    }
    if let DataFusionError::External(inner) = e {
        if let Some(failure) = inner.downcast_ref::<NodeFailure>() {
            return clean_message(&failure.error);
        }
    }
    let text = match e {
        DataFusionError::Diagnostic(_, inner) => return clean_message(inner),
        DataFusionError::Context(ctx, inner) => format!("{ctx}: {}", clean_message(inner)),
        DataFusionError::Shared(inner) => return clean_message(inner),
        DataFusionError::ArrowError(inner, _) => inner.to_string(),
        DataFusionError::ParquetError(inner) => inner.to_string(),
        other => other.to_string(),
    };
    strip_prefixes(&text)
}

fn strip_prefixes(text: &str) -> String {
    const PREFIXES: &[&str] = &[
        "Error during planning: ",
        "Schema error: ",
        "Arrow error: ",
        "Execution error: ",
        "External error: ",
        "Parquet error: ",
        "Optimizer rule ",
        "Invalid argument error: ",
        "Internal error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Resources exhausted: ",
        "Object Store error: ",
        "IO error: ",
        "Csv error: ",
        "Parser error: ",
        "Cast error: ",
        "Compute error: ",
        "Divide by zero error",
    ];
    let mut t = text.trim();
    loop {
        let before = t;
        for p in PREFIXES {
            if *p == "Divide by zero error" {
                continue;
            }
            t = t.strip_prefix(p).unwrap_or(t);
        }
        if t == before {
            break;
        }
    }
    // DataFusion appends a backtrace hint and sometimes a trailing period-less context.
    let t = t.split("\n\nbacktrace").next().unwrap_or(t);
    t.trim().to_string()
}

/// A connector error carried inside a DataFusion error (streams can only fail with those).
pub fn find_connector_error(e: &DataFusionError) -> Option<&ConnectorError> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<ConnectorError>().or_else(|| {
            inner
                .downcast_ref::<DataFusionError>()
                .or_else(|| inner.downcast_ref::<NodeFailure>().map(|f| &f.error))
                .and_then(find_connector_error)
        }),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_connector_error(inner)
        }
        DataFusionError::Shared(inner) => find_connector_error(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(ext) => {
                ext.downcast_ref::<ConnectorError>().or_else(|| {
                    ext.downcast_ref::<DataFusionError>()
                        .and_then(find_connector_error)
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether `e` says a memory limit was reached (anywhere inside it).
pub fn is_resources_exhausted(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::External(inner) => {
            inner
                .downcast_ref::<DataFusionError>()
                .is_some_and(is_resources_exhausted)
                || inner
                    .downcast_ref::<NodeFailure>()
                    .is_some_and(|f| is_resources_exhausted(&f.error))
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_resources_exhausted(inner)
        }
        DataFusionError::Shared(inner) => is_resources_exhausted(inner),
        _ => false,
    }
}

/// A DataFusion error met while moving rows, as a connector error (kept as it was when it
/// already is one).
pub fn to_connector_error(e: DataFusionError, context: &str) -> ConnectorError {
    match find_connector_error(&e) {
        Some(c) => c.clone(),
        None => ConnectorError::permanent(format!("{context}: {}", clean_message(&e))).caused_by(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_data_and_the_source_is_kept() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = ConnectorError::transient("reading orders: reset by peer").caused_by(io);
        assert!(e.is_transient());
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(e.to_string(), "reading orders: reset by peer");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("reset by peer")
        );
        assert_eq!(e, ConnectorError::transient("reading orders: reset by peer"));
        assert_ne!(e, ConnectorError::permanent("reading orders: reset by peer"));
        assert!(ConnectorError::permanent("x").source().is_none());
    }

    #[test]
    fn prefixes_are_stripped() {
        let e = DataFusionError::Plan("Schema error: No field named amout.".into());
        assert_eq!(clean_message(&e), "No field named amout.");
    }

    #[test]
    fn connector_errors_pass_through() {
        let e = DataFusionError::External(Box::new(ConnectorError::permanent("x.csv line 3: bad")));
        assert_eq!(clean_message(&e), "x.csv line 3: bad");
        assert_eq!(to_connector_error(e, "ctx").message, "x.csv line 3: bad");
    }

    #[test]
    fn node_failures_are_seen_through() {
        let inner = DataFusionError::External(Box::new(ConnectorError::transient("reset")));
        let tagged = DataFusionError::External(Box::new(NodeFailure {
            node: "orders".into(),
            error: inner,
        }));
        assert_eq!(clean_message(&tagged), "reset");
        assert_eq!(
            find_connector_error(&tagged),
            Some(&ConnectorError::transient("reset"))
        );
        let plain = DataFusionError::External(Box::new(NodeFailure {
            node: "orders".into(),
            error: DataFusionError::Execution("Arrow error: bad cast".into()),
        }));
        assert_eq!(clean_message(&plain), "bad cast");
        assert_eq!(find_connector_error(&plain), None);
    }

    #[test]
    fn exhausted_memory_is_found_inside_wrappers() {
        let e = DataFusionError::ResourcesExhausted("pool".into());
        let tagged = DataFusionError::External(Box::new(NodeFailure {
            node: "n".into(),
            error: e,
        }));
        let wrapped = DataFusionError::Context("ctx".into(), Box::new(tagged));
        assert!(is_resources_exhausted(&wrapped));
        assert!(!is_resources_exhausted(&DataFusionError::Plan("x".into())));
    }

    #[test]
    fn other_errors_get_their_context() {
        let e = DataFusionError::Execution("Arrow error: bad".into());
        let c = to_connector_error(e, "writing parquet");
        assert_eq!(c, ConnectorError::permanent("writing parquet: bad"));
    }
}
