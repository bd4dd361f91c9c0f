//! Commands run on the agent's host in a checkout: a service's `build`, a
//! gateway's `prepare`. Never through a shell; output captured for the log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{program}` could not be started: {message}")]
    Spawn { program: String, message: String },
    #[error("`{command}` failed ({status}):\n{tail}")]
    Failed {
        command: String,
        status: String,
        tail: String,
    },
    #[error("`{command}` did not finish within {secs}s and was killed")]
    Timeout { command: String, secs: u64 },
}

/// Lines of output kept in an error message.
const TAIL_LINES: usize = 20;

/// Runs `argv` in `dir` with `env` added; returns the combined output.
pub async fn run(
    argv: &[String],
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, CommandError> {
    let (program, args) = argv
        .split_first()
        .expect("commands are non-empty (validated in spec)");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| CommandError::Spawn {
        program: program.clone(),
        message: e.to_string(),
    })?;
    let shown = argv.join(" ");
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| CommandError::Spawn {
            program: program.clone(),
            message: e.to_string(),
        })?,
        Err(_) => {
            return Err(CommandError::Timeout {
                command: shown,
                secs: timeout.as_secs(),
            });
        }
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let status = match out.status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        };
        return Err(CommandError::Failed {
            command: shown,
            status,
            tail: tail(&text),
        });
    }
    Ok(text)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_in_dir_with_env_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let out = run(
            &argv(&["sh", "-c", "pwd; echo $X"]),
            dir.path(),
            &[("X".into(), "y".into())],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(out.contains(dir.path().to_str().unwrap()) && out.contains('y'));
        let err = run(
            &argv(&["sh", "-c", "echo boom >&2; exit 3"]),
            dir.path(),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo boom >&2; exit 3` failed (exit code 3):\nboom"
        );
        let err = run(
            &argv(&["no-such-program-sdp"]),
            dir.path(),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }));
        let err = run(
            &argv(&["sleep", "5"]),
            dir.path(),
            &[],
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }));
    }
}
