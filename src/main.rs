//! The `sluice` binary: `serve` (the default) and `migrate`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sluice::config::Settings;
use sluice::startup::Application;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run data flows: ingest, transform with a SQL DAG, persist atomically, follow live."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// A TOML file layered over the built-in defaults (then SLUICE__SECTION__KEY variables).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the metadata database, then exit.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => {
            let settings = load(config.as_ref())?;
            sluice::telemetry::init(&settings.telemetry).map_err(|e| anyhow::anyhow!(e))?;
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                app.stop_on_signals();
                app.run_until_stopped().await?;
                Ok(())
            })
        }
        Command::Migrate { config } => {
            let settings = load(config.as_ref())?;
            sluice::telemetry::init(&settings.telemetry).map_err(|e| anyhow::anyhow!(e))?;
            actix_web::rt::System::new().block_on(async move {
                std::fs::create_dir_all(&settings.data_dir)?;
                sluice::startup::connect_metadata(&settings)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                tracing::info!("metadata database is up to date");
                Ok(())
            })
        }
    }
}
