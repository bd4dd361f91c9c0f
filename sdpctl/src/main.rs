//! sdpctl: the command line people use to run sandboxes.

mod api;
mod apply;
mod show;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sdp_spec::record::Kind;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run feature branches of microservices in isolated sandboxes"
)]
struct Cli {
    /// Controller URL.
    #[arg(
        long,
        global = true,
        env = "SDP_CONTROLLER",
        default_value = "http://127.0.0.1:3452"
    )]
    controller: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Toml,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply spec files (a file, a directory of .toml files, or - for stdin) as one atomic batch.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Validate against the controller without storing anything.
        #[arg(long)]
        dry_run: bool,
        /// Wait until every applied sandbox is Ready (fails at once if one is Degraded).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 5m).
        #[arg(long, default_value = "5m", value_parser = duration)]
        timeout: Duration,
    },
    /// List records of a kind, or show one.
    Get { kind: String, name: Option<String> },
    /// Show a sandbox's status: units, commits, and the live route table.
    Describe { kind: String, name: String },
    /// Delete a record.
    Delete { kind: String, name: String },
    /// Every applied revision of a record.
    History { kind: String, name: String },
    /// Wait until sandboxes are Ready.
    Wait {
        names: Vec<String>,
        #[arg(long, default_value = "5m", value_parser = duration)]
        timeout: Duration,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    sdp_spec::types::parse_duration(s)
}

fn kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse(s).ok_or_else(|| anyhow::anyhow!("unknown kind `{s}`; allowed: {}", Kind::names()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = api::Api::new(&cli.controller);
    match cli.command {
        Command::Apply {
            files,
            dry_run,
            wait,
            timeout,
        } => {
            let docs = apply::collect(&files)?;
            let opts = apply::ApplyOptions {
                dry_run,
                wait,
                timeout,
                json: cli.output == Output::Json,
            };
            apply::apply(&api, docs, &opts).await
        }
        Command::Get { kind: k, name } => {
            show::get(&api, kind(&k)?, name.as_deref(), cli.output).await
        }
        Command::Describe { kind: k, name } => {
            if kind(&k)? != Kind::Sandbox {
                anyhow::bail!(
                    "describe shows sandboxes; use `sdpctl get {k} {name}` for other kinds"
                );
            }
            show::describe(&api, &name, cli.output).await
        }
        Command::Delete { kind: k, name } => {
            let k = kind(&k)?;
            api.delete(k, &name).await?;
            println!("{k}/{name} deleted");
            Ok(())
        }
        Command::History { kind: k, name } => {
            show::history(&api, kind(&k)?, &name, cli.output).await
        }
        Command::Wait { names, timeout } => apply::wait_ready(&api, &names, timeout).await,
    }
}
