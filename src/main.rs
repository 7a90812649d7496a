//! The `sluice` binary: `serve` (the default) and `migrate` run the service; `stores`, `inputs`
//! `flows` and `run` are a client of a running server (`--url`/`SLUICE_URL`, `--token`/`SLUICE_TOKEN`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::cli::{self, FlowsCommand, InputsCommand, StoresCommand};
use sluice::config::Settings;
use sluice::startup::Application;

/// Exit code of a command line that clap cannot parse (EX_USAGE), kept apart from the codes of
/// `flows follow` (0 COMPLETED, 1 FAILED, 2 CANCELLED) and 3 (a request failed).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run data flows: ingest, transform with a SQL DAG, persist atomically, follow live."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The server the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "SLUICE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The API token, when the server requires one.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of text (client commands).
    #[arg(long, global = true)]
    json: bool,
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
    /// Data stores on a running server.
    #[command(subcommand)]
    Stores(StoresCommand),
    /// Flow inputs on a running server.
    #[command(subcommand)]
    Inputs(InputsCommand),
    /// Flows on a running server: start, retry, get, list, follow, cancel.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Run a flow input (a folder with sluice.toml and .sql files, or a JSON file): create it
    /// unless an identical one is stored, start a flow. Exit 0 COMPLETED, 1 FAILED, 2 CANCELLED
    /// with --follow; 3 when a request fails (problems printed with their file and line).
    Run {
        path: PathBuf,
        /// Follow the flow until it ends, with a progress bar and its log lines.
        #[arg(long)]
        follow: bool,
    },
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config.as_ref())?;
    // Its message holds its cause already (`{e:#}` in `service` would print that twice).
    sluice::telemetry::init(&settings.telemetry).map_err(|e| anyhow::anyhow!("{e}"))?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        app.stop_on_signals();
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config.as_ref())?;
    // Its message holds its cause already (`{e:#}` in `service` would print that twice).
    sluice::telemetry::init(&settings.telemetry).map_err(|e| anyhow::anyhow!("{e}"))?;
    actix_web::rt::System::new().block_on(async move {
        std::fs::create_dir_all(&settings.data_dir)?;
        sluice::startup::connect_metadata(&settings)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!("metadata database is up to date");
        Ok(())
    })
}

fn service(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve { config: None });
    let client = || {
        let client = cli::Client::new(&cli.url, cli.token.clone())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| cli::ClientError::Input(format!("cannot start a runtime: {e}")))?;
        Ok::<_, cli::ClientError>((client, runtime))
    };
    let out = cli::Output { json: cli.json };
    match command {
        Command::Serve { config } => service(serve(config)),
        Command::Migrate { config } => service(migrate(config)),
        client_command => match client() {
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(cli::EXIT_ERROR)
            }
            Ok((client, runtime)) => runtime.block_on(async {
                match client_command {
                    Command::Stores(cmd) => cli::stores(&client, out, cmd).await,
                    Command::Inputs(cmd) => cli::inputs(&client, out, cmd).await,
                    Command::Flows(cmd) => cli::flows(&client, out, cmd).await,
                    Command::Run { path, follow } => cli::run(&client, out, &path, follow).await,
                    Command::Serve { .. } | Command::Migrate { .. } => ExitCode::SUCCESS,
                }
            }),
        },
    }
}
