//! Carrying out planned actions, one unit at a time, each idempotent.

use std::collections::BTreeMap;

use super::desire::{STAMP_FILE, Unit, sdp_env};
use super::{Failure, Reconciler};
use crate::docker::{DockerError, LABEL_AGENT, LABEL_MANAGED, LABEL_ROLE};
use crate::layout;
use crate::plan::Action;

/// Exit codes of a shell that could not run the program.
const NOT_RUNNABLE: [i64; 2] = [126, 127];

impl Reconciler {
    /// Checks made before any action of a unit, so a refused change leaves
    /// everything as it was (the previous gateway keeps serving).
    pub(super) async fn preflight(&self, unit: &mut Unit, plan: &[Action]) -> Result<(), Failure> {
        let writes_config = plan.iter().any(|a| matches!(a, Action::WriteConfig { .. }));
        let (Ok(d), true) = (&unit.desired, writes_config) else {
            return Ok(());
        };
        let c = d
            .config
            .as_ref()
            .expect("a planned config write has a config");
        if c.desired == c.committed {
            return Ok(()); // restoring what git committed: nothing new to check
        }
        match self.lint(&d.container.image, &c.desired).await {
            Ok(None) => Ok(()),
            Ok(Some(note)) => {
                unit.notes.push(note);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `php -l` on the patched file, in the gateway's own image. `Ok(Some)`
    /// is a note: the image cannot check PHP, so the file goes unchecked.
    async fn lint(&self, image: &str, bytes: &[u8]) -> Result<Option<String>, Failure> {
        let dir = layout::lint_dir(&self.cfg.work_dir);
        let file = dir.join(format!("{}.php", sdp_spec::wire::content_hash(&bytes)));
        let (d, f, b) = (dir.clone(), file.clone(), bytes.to_vec());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&d)?;
            std::fs::write(&f, b)
        })
        .await
        .map_err(transient)?
        .map_err(|e| Failure::transient(format!("preparing the PHP check: {e}")))?;
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_AGENT.to_string(), self.cfg.name.clone()),
            (LABEL_ROLE.to_string(), "lint".to_string()),
        ]);
        let cmd = ["php", "-l", "/sdp-lint/config.php"].map(String::from);
        let bind = format!("{}:/sdp-lint/config.php:ro", file.display());
        let result = self.engine.run_once(image, &cmd, &[bind], &labels).await;
        let _ = std::fs::remove_file(&file);
        match result {
            Ok((0, _)) => Ok(None),
            Ok((code, output)) if NOT_RUNNABLE.contains(&code) => Ok(Some(format!(
                "the patched URL map was not checked: {image} cannot run `php -l` ({})",
                output.trim()
            ))),
            Ok((_, output)) => Err(Failure::blocked(format!(
                "the patched URL map does not parse as PHP in {image}; nothing was changed: {}",
                output
                    .trim()
                    .replace("/sdp-lint/config.php", "the patched file")
            ))),
            Err(e) if e.to_string().contains("executable file not found") => Ok(Some(format!(
                "the patched URL map was not checked: {image} has no `php` command"
            ))),
            Err(e) => Err(Failure::transient(format!(
                "checking the patched URL map: {e}"
            ))),
        }
    }

    pub(super) async fn execute(&self, unit: &mut Unit, action: &Action) -> Result<(), Failure> {
        let Ok(d) = &unit.desired else {
            return Err(Failure::transient("no desired state"));
        };
        match action {
            Action::Checkout { commit, .. } => {
                let git = self.git.clone();
                let (repo, path, commit) = (d.repo.clone(), d.checkout.clone(), commit.clone());
                tokio::task::spawn_blocking(move || git.checkout(&repo, &path, &commit))
                    .await
                    .map_err(transient)?
                    .map_err(transient)
            }
            Action::Build { .. } => {
                let b = d.build.as_ref().expect("planned builds exist");
                let env = sdp_env(&d.id, &unit.branch, &d.commit);
                let result =
                    crate::hostcmd::run(&b.command, &d.checkout, &env, self.cfg.build_timeout)
                        .await;
                if let Err(e) = &result {
                    if !b.best_effort {
                        return Err(Failure::blocked(format!("build failed: {e}")));
                    }
                    unit.notes.push(format!(
                        "prepare failed (best effort, deploying anyway): {e}"
                    ));
                }
                // A best-effort step that failed is not retried every pass.
                let stamp_path = d.checkout.join(STAMP_FILE);
                let stamp = b.stamp.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(stamp_path.parent().expect("stamp has a parent"))?;
                    std::fs::write(stamp_path, stamp)
                })
                .await
                .map_err(transient)?
                .map_err(|e| Failure::transient(format!("writing the build stamp: {e}")))
            }
            Action::WriteConfig { .. } => {
                let c = d.config.as_ref().expect("planned config exists");
                let (path, bytes) = (c.path.clone(), c.desired.clone());
                tokio::task::spawn_blocking(move || layout::write_atomic(&path, &bytes))
                    .await
                    .map_err(transient)?
                    .map_err(|e| Failure::transient(format!("writing {}: {e}", c.path.display())))
            }
            Action::WriteProbe { .. } => {
                let (path, bytes) = d
                    .config
                    .as_ref()
                    .and_then(|c| c.probe.clone())
                    .expect("planned probe exists");
                let shown = path.display().to_string();
                let written =
                    tokio::task::spawn_blocking(move || layout::write_atomic(&path, &bytes))
                        .await
                        .map_err(transient)?;
                // Without the probe SDP reads routes from the file; that is a
                // note, not a reason to hold the sandbox back.
                if let Err(e) = written {
                    unit.notes
                        .push(format!("cannot write SDP's probe {shown}: {e}"));
                }
                Ok(())
            }
            Action::Remove { id, .. } => self.engine.remove(id).await.map_err(transient),
            Action::Create { .. } => self
                .engine
                .create_and_start(&d.container, &self.cfg.name)
                .await
                .map(|_| ())
                .map_err(|e| {
                    let blocked = matches!(
                        e,
                        DockerError::ImageMissing { .. }
                            | DockerError::PortTaken { .. }
                            | DockerError::NameTaken { .. }
                    );
                    Failure {
                        message: e.to_string(),
                        blocked,
                    }
                }),
            Action::Start { id, .. } => self.engine.start(id).await.map_err(transient),
            Action::Reload { id, .. } => {
                let cmd = d.reload.as_ref().expect("planned reloads have a command");
                self.reload(id, cmd).await.map_err(Failure::transient)
            }
            Action::RemoveCheckout { .. } => Ok(()),
        }
    }

    pub(super) async fn reload(&self, id: &str, cmd: &[String]) -> Result<(), String> {
        let (code, output) = self.engine.exec(id, cmd).await.map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!(
                "reload `{}` failed (exit code {code}): {}",
                cmd.join(" "),
                output.trim()
            ));
        }
        Ok(())
    }

    pub(super) async fn execute_gc(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::Remove { id, .. } => self.engine.remove(id).await.map_err(|e| e.to_string()),
            Action::RemoveCheckout { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("removing {}: {e}", path.display())),
                    }
                    // The sandbox's directory goes with its last checkout
                    // (remove_dir only removes an empty directory).
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::remove_dir(parent);
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?
            }
            other => Err(format!("not a garbage-collection action: {other}")),
        }
    }
}

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::transient(e.to_string())
}
