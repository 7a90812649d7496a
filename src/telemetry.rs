//! Service logging: a `tracing` subscriber writing pretty lines on a terminal or one JSON object
//! per line (`telemetry.format = "json"`). In JSON every line carries the fields of the spans it
//! happened in at the top level (inner spans win), so a line about a flow has `flow_id` (and
//! `task` inside a task) and `jq 'select(.flow_id == 12)'` tells one flow's story. The sink is
//! injectable so tests can capture the log.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level directives of `setting` (`RUST_LOG` or `telemetry.level`) do not parse.
    #[error("{setting}: {source}")]
    Filter {
        setting: &'static str,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is installed already (as `tracing_subscriber` reports it).
    #[error("{0}")]
    Installed(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    GlobalDefault(#[from] tracing::subscriber::SetGlobalDefaultError),
}

/// `RUST_LOG` when set (and not empty), else `telemetry.level`.
fn filter(settings: &TelemetrySettings) -> Result<EnvFilter, TelemetryError> {
    let (setting, directives) = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => ("RUST_LOG", directives),
        _ => ("telemetry.level", settings.level.clone()),
    };
    EnvFilter::try_new(&directives).map_err(|source| TelemetryError::Filter { setting, source })
}

/// The JSON-lines subscriber writing to `sink` (not installed).
pub fn json_subscriber<W>(
    settings: &TelemetrySettings,
    sink: W,
) -> Result<impl Subscriber + Send + Sync, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Ok(tracing_subscriber::fmt()
        .with_env_filter(filter(settings)?)
        .with_writer(sink)
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .finish())
}

/// Installs the global subscriber writing to `sink`. Fails if one is already installed.
pub fn init_with_writer<W>(settings: &TelemetrySettings, sink: W) -> Result<(), TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match settings.format {
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter(settings)?)
            .with_writer(sink)
            .with_target(true)
            .with_ansi(false)
            .try_init()
            .map_err(TelemetryError::Installed)?,
        LogFormat::Json => tracing::subscriber::set_global_default(json_subscriber(settings, sink)?)?,
    }
    Ok(())
}

/// Installs the global subscriber writing to standard output.
pub fn init(settings: &TelemetrySettings) -> Result<(), TelemetryError> {
    init_with_writer(settings, std::io::stdout)
}

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of every enclosing
/// span (outermost first, so inner ones win), `spans` (their names), then the event's own
/// fields (`message` among them).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(crate::domain::time::format(&chrono::Utc::now())),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(Value::String(span.name().to_string()));
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields.as_str()) {
                        line.extend(map);
                    }
                }
            }
            line.insert("spans".into(), Value::Array(names));
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records an event's fields into a JSON map.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_flow_and_task_of_their_spans() {
        let sink = Sink::default();
        let settings = TelemetrySettings {
            format: LogFormat::Json,
            level: "info".into(),
        };
        let subscriber = json_subscriber(&settings, sink.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let flow = tracing::info_span!("flow", flow_id = 12);
            let _f = flow.enter();
            tracing::info!("flow started");
            let task = tracing::info_span!("task", flow_id = 12, task = "stg_orders");
            let _t = task.enter();
            tracing::warn!(attempt = 2, "transient failure, retrying");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["flow_id"], 12);
        assert_eq!(lines[0]["message"], "flow started");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0].get("task").is_none());
        assert_eq!(lines[1]["flow_id"], 12);
        assert_eq!(lines[1]["task"], "stg_orders");
        assert_eq!(lines[1]["attempt"], 2);
        assert_eq!(lines[1]["spans"], serde_json::json!(["flow", "task"]));
    }
}
