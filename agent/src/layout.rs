//! Where the agent keeps things under its work directory. The layout is the
//! agent's only state besides Docker: everything is re-derived from it.
//!
//! ```text
//! <work>/cache/<repo>-<hash>.git           bare git cache per repository URL
//! <work>/sandboxes/<sandbox>/<role>-<unit> checkout per sandbox unit
//! <work>/assignments.json                  last work received (used while the controller is down)
//! <work>/probe.token                       secret of SDP's gateway probes
//! <work>/lint/                             patched files being checked with `php -l`
//! ```

use std::path::{Path, PathBuf};

use sdp_spec::wire::Role;

use crate::plan::UnitId;

pub fn cache_dir(work: &Path) -> PathBuf {
    work.join("cache")
}

pub fn sandboxes_dir(work: &Path) -> PathBuf {
    work.join("sandboxes")
}

pub fn assignments_file(work: &Path) -> PathBuf {
    work.join("assignments.json")
}

/// Scratch space for checking patched files before they are swapped in.
pub fn lint_dir(work: &Path) -> PathBuf {
    work.join("lint")
}

/// The secret that SDP's gateway probes ask for, created once per work dir
/// (so probes written before a restart stay valid after it).
pub fn probe_token(work: &Path) -> String {
    let path = work.join("probe.token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && t.trim().len() == 32
    {
        return t.trim().to_string();
    }
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    let token = hex::encode(bytes);
    let _ = std::fs::create_dir_all(work);
    if let Err(e) = write_atomic(&path, token.as_bytes()) {
        tracing::warn!(error = %e, "cannot save the probe token; probes will be rewritten after a restart");
    }
    token
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Service => "service",
        Role::Gateway => "gateway",
    }
}

pub fn checkout_dir(work: &Path, unit: &UnitId) -> PathBuf {
    sandboxes_dir(work)
        .join(&unit.sandbox)
        .join(format!("{}-{}", role_word(unit.role), unit.name))
}

/// Every checkout present on disk, with the unit it belongs to.
pub fn scan_checkouts(work: &Path) -> Vec<(UnitId, PathBuf)> {
    let mut out = Vec::new();
    let Ok(sandboxes) = std::fs::read_dir(sandboxes_dir(work)) else {
        return out;
    };
    for sb in sandboxes.flatten() {
        let sb_name = sb.file_name().to_string_lossy().into_owned();
        let Ok(units) = std::fs::read_dir(sb.path()) else {
            continue;
        };
        let mut empty = true;
        for unit in units.flatten() {
            empty = false;
            let dir = unit.file_name().to_string_lossy().into_owned();
            let parsed = dir.split_once('-').and_then(|(role, name)| match role {
                "service" => Some((Role::Service, name)),
                "gateway" => Some((Role::Gateway, name)),
                _ => None,
            });
            if let Some((role, name)) = parsed {
                out.push((
                    UnitId {
                        sandbox: sb_name.clone(),
                        role,
                        name: name.to_string(),
                    },
                    unit.path(),
                ));
            }
        }
        if empty {
            let _ = std::fs::remove_dir(sb.path());
        }
    }
    out.sort();
    out
}

/// Writes a file so that a crash leaves either the old or the new content:
/// temp file in the same directory, fsync, same permissions, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.sdp-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
            use std::os::unix::fs::MetadataExt;
            // Keep the owner too, where we may (running as root).
            let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.php");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn checkouts_are_found_by_unit() {
        let dir = tempfile::tempdir().unwrap();
        let u = UnitId {
            sandbox: "alice".into(),
            role: Role::Gateway,
            name: "erangel".into(),
        };
        std::fs::create_dir_all(checkout_dir(dir.path(), &u)).unwrap();
        std::fs::create_dir_all(sandboxes_dir(dir.path()).join("empty")).unwrap();
        assert_eq!(
            scan_checkouts(dir.path()),
            vec![(u.clone(), checkout_dir(dir.path(), &u))]
        );
        assert!(
            !sandboxes_dir(dir.path()).join("empty").exists(),
            "empty sandbox dirs are tidied"
        );
    }
}
