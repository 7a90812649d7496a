//! Service logging: a `tracing` subscriber writing pretty lines on a terminal or one JSON object
//! per line (`telemetry.format = "json"`). The sink is injectable so tests can capture the log.

use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber writing to `sink`. Fails if one is already installed.
pub fn init_with_writer<W>(settings: &TelemetrySettings, sink: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .map_err(|e| format!("telemetry.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(true);
    let result = match settings.format {
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Installs the global subscriber writing to standard output.
pub fn init(settings: &TelemetrySettings) -> Result<(), String> {
    init_with_writer(settings, std::io::stdout)
}
