use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// SDP controller: stores sandboxes and the service catalog, serves agents.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SDP_LISTEN", default_value = sdp_controller::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Directory of the redb database.
    #[arg(long, env = "SDP_DATA_DIR")]
    data_dir: PathBuf,
    /// An agent not heard from for this long is shown as stale (e.g. 90s, 5m).
    #[arg(long, env = "SDP_STALE_AFTER", default_value = "90s", value_parser = humantime_duration)]
    stale_after: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "SDP_LOG_JSON")]
    log_json: bool,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    sdp_spec::types::parse_duration(s)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = match sdp_controller::runtime::parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    sdp_controller::runtime::init_logging(args.log_json);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sdp-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = sdp_controller::Config {
        listen: args.listen,
        data_dir: args.data_dir,
        settings: sdp_controller::Settings {
            stale_after: args.stale_after,
            ..Default::default()
        },
    };
    let bound = sdp_controller::bind(&config).await?;
    tracing::info!(addr = %bound.local_addr(), data_dir = %config.data_dir.display(), "controller listening");
    bound
        .serve(sdp_controller::runtime::shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("controller stopped");
    Ok(())
}
