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
    /// What applying the files would change, per agent, without changing
    /// anything. Exit code 0: nothing would change, 2: something would, 1: error.
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List records of a kind, or show one.
    Get { kind: String, name: Option<String> },
    /// Show a sandbox's status: units, commits, and the live route table.
    Describe { kind: String, name: String },
    /// Delete a record.
    Delete {
        kind: String,
        name: String,
        /// For a sandbox: wait until its agents have removed everything.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "5m", value_parser = duration)]
        timeout: Duration,
    },
    /// Every applied revision of a record.
    History { kind: String, name: String },
    /// Wait until sandboxes are Ready.
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, default_value = "5m", value_parser = duration)]
        timeout: Duration,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    sdp_spec::types::parse_duration(s)
}

/// A dry run found changes: exit code 2, like `terraform plan -detailed-exitcode`.
#[derive(Debug)]
pub struct WouldChange;

impl std::fmt::Display for WouldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("changes pending")
    }
}

impl std::error::Error for WouldChange {}

/// A mistake in how sdpctl was called: exit code 64.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse(s).ok_or_else(|| usage(format!("unknown kind `{s}`; allowed: {}", Kind::names())))
}

/// Names go into URLs: anything but a valid record name is refused here.
fn name(s: &str) -> anyhow::Result<&str> {
    sdp_spec::types::check_name(s).map_err(usage)?;
    Ok(s)
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
        Err(e) if e.downcast_ref::<WouldChange>().is_some() => ExitCode::from(2),
        Err(e) => {
            let msg = sdp_spec::types::redact_credentials(&format!("{e:#}"));
            eprintln!("error: {msg}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ok_url = (cli.controller.starts_with("http://") || cli.controller.starts_with("https://"))
        && cli.controller.len() > "https://".len();
    if !ok_url {
        return Err(usage(format!(
            "--controller must be an http:// or https:// URL, got `{}`",
            sdp_spec::types::shown(&cli.controller)
        )));
    }
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
                plan_only: false,
                wait,
                timeout,
                json: cli.output == Output::Json,
            };
            apply::apply(&api, docs, &opts).await
        }
        Command::Diff { files } => {
            let docs = apply::collect(&files)?;
            let opts = apply::ApplyOptions {
                dry_run: true,
                plan_only: true,
                wait: false,
                timeout: Duration::ZERO,
                json: cli.output == Output::Json,
            };
            apply::apply(&api, docs, &opts).await
        }
        Command::Get { kind: k, name: n } => {
            let k = kind(&k)?;
            let n = n.as_deref().map(name).transpose()?;
            show::get(&api, k, n, cli.output).await
        }
        Command::Describe { kind: k, name: n } => {
            if kind(&k)? != Kind::Sandbox {
                return Err(usage(format!(
                    "describe shows sandboxes; use `sdpctl get {k} {n}` for other kinds"
                )));
            }
            show::describe(&api, name(&n)?, cli.output).await
        }
        Command::Delete {
            kind: k,
            name: n,
            wait,
            timeout,
        } => {
            let k = kind(&k)?;
            api.delete(k, name(&n)?).await?;
            if k != Kind::Sandbox {
                println!("{k}/{n} deleted");
                return Ok(());
            }
            if !wait {
                println!(
                    "{k}/{n} deleted; its agents are removing it (`sdpctl describe sandbox {n}` shows what is pending)"
                );
                return Ok(());
            }
            apply::wait_gone(&api, &n, timeout).await?;
            println!("{k}/{n} deleted and removed");
            Ok(())
        }
        Command::History { kind: k, name: n } => {
            show::history(&api, kind(&k)?, name(&n)?, cli.output).await
        }
        Command::Wait { names, timeout } => {
            for n in &names {
                name(n)?;
            }
            apply::wait_ready(&api, &names, timeout).await
        }
    }
}
