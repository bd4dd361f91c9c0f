//! Git through git2: one bare cache per repository URL, and one checkout per
//! sandbox unit, detached at an exact commit. Blocking: call from
//! `spawn_blocking`.
//!
//! Invariants:
//! - Fetches use forced refspecs into SDP's own ref namespace, named by a hash
//!   of the branch, so a force-push is followed and a branch renamed to
//!   `branch/sub` can never wedge the cache on a file/directory clash.
//! - The commit deployed is the one the remote advertised for the branch; a
//!   branch the remote no longer has is an error, never the stale commit.
//! - Credentials are offered at most once per operation and never appear in
//!   an error, a log line or a stored file (URLs are redacted).

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{AutotagOption, Cred, FetchOptions, Oid, RemoteCallbacks, Repository};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("fetching {branch} from {url}: {message}")]
    Fetch {
        url: String,
        branch: String,
        message: String,
    },
    #[error("branch {branch} does not exist in {url}")]
    BranchMissing { url: String, branch: String },
    #[error("authentication failed for {url} as {user}")]
    Auth { url: String, user: String },
    #[error("checkout of {commit} in {path}: {message}")]
    Checkout {
        path: PathBuf,
        commit: String,
        message: String,
    },
    #[error("git cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// Credentials for HTTPS remotes, given to the agent (never in records).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// A pinned commit, as the cache knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// On the branch: its full id.
    OnBranch(String),
    /// Known, but not on the branch.
    Elsewhere,
    /// Not a commit the cache has (nor, so, the branch).
    Unknown,
}

/// The result of asking the remote where a branch is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub commit: String,
    /// The branch moved to a commit that does not descend from the one the
    /// cache had: upstream history was rewritten (force-push).
    pub rewritten_from: Option<String>,
}

pub struct Git {
    cache_root: PathBuf,
    credentials: Option<Credentials>,
}

impl Git {
    pub fn new(cache_root: PathBuf, credentials: Option<Credentials>) -> Self {
        Self {
            cache_root,
            credentials,
        }
    }

    /// The bare cache of one repository URL.
    pub fn cache_path(&self, url: &str) -> PathBuf {
        let slug: String = url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo")
            .trim_end_matches(".git")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        let hash = &sdp_spec::wire::content_hash(&url)[..12];
        self.cache_root.join(format!("{slug}-{hash}.git"))
    }

    fn open_cache(&self, url: &str) -> Result<Repository, GitError> {
        let path = self.cache_path(url);
        let cache_err = |e: git2::Error| GitError::Cache {
            path: path.clone(),
            message: e.message().to_string(),
        };
        match Repository::open_bare(&path) {
            Ok(r) => Ok(r),
            Err(_) if path.exists() => {
                // A cache that cannot be opened is only a cache: start over.
                tracing::warn!(path = %path.display(), "git cache unreadable; recreating it");
                std::fs::remove_dir_all(&path).map_err(|e| GitError::Cache {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Repository::init_bare(&path).map_err(cache_err)
            }
            Err(_) => {
                std::fs::create_dir_all(&self.cache_root).map_err(|e| GitError::Cache {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Repository::init_bare(&path).map_err(cache_err)
            }
        }
    }

    /// Fetches `branch` into the cache and returns the commit the remote
    /// advertises for it.
    pub fn resolve(&self, url: &str, branch: &str) -> Result<Resolved, GitError> {
        let repo = self.open_cache(url)?;
        let tracking = tracking_ref(branch);
        let previous = repo.refname_to_id(&tracking).ok();
        let shown_url = redact_url(url);
        let fetch_err = |e: git2::Error| GitError::Fetch {
            url: shown_url.clone(),
            branch: branch.to_string(),
            message: redact_text(e.message()),
        };

        let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
        let mut opts = self.fetch_options(url);
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut opts), None) {
            if e.class() == git2::ErrorClass::Http && e.message().contains("authentication")
                || e.code() == git2::ErrorCode::Auth
            {
                return Err(GitError::Auth {
                    url: shown_url.clone(),
                    user: self
                        .credentials
                        .as_ref()
                        .map_or("(none)".into(), |c| c.username.clone()),
                });
            }
            return Err(fetch_err(e));
        }
        let want = format!("refs/heads/{branch}");
        let advertised = remote
            .list()
            .map_err(fetch_err)?
            .iter()
            .find(|h| h.name() == want)
            .map(|h| h.oid());
        let Some(oid) = advertised else {
            return Err(GitError::BranchMissing {
                url: shown_url,
                branch: branch.to_string(),
            });
        };
        if repo.find_commit(oid).is_err() {
            return Err(GitError::Fetch {
                url: shown_url,
                branch: branch.to_string(),
                message: format!("the remote advertised {oid} but did not send it"),
            });
        }
        repo.reference(&tracking, oid, true, "sdp: branch head")
            .and_then(|_| repo.reference(&pin_ref(oid), oid, true, "sdp: pinned for checkout"))
            .map_err(fetch_err)?;
        let rewritten_from = previous
            .filter(|&old| old != oid && !repo.graph_descendant_of(oid, old).unwrap_or(false))
            .map(|old| old.to_string());
        Ok(Resolved {
            commit: oid.to_string(),
            rewritten_from,
        })
    }

    /// Makes `path` a checkout of `commit` (which `resolve` put in the cache),
    /// detached, with tracked files exactly as committed.
    pub fn checkout(&self, url: &str, path: &Path, commit: &str) -> Result<(), GitError> {
        let err = |message: String| GitError::Checkout {
            path: path.to_path_buf(),
            commit: commit.to_string(),
            message,
        };
        let oid = Oid::from_str(commit).map_err(|e| err(e.message().to_string()))?;
        let repo = match Repository::open(path) {
            Ok(r) => r,
            Err(_) => {
                if path.exists() {
                    std::fs::remove_dir_all(path).map_err(|e| err(e.to_string()))?;
                }
                std::fs::create_dir_all(path).map_err(|e| err(e.to_string()))?;
                Repository::init(path).map_err(|e| err(e.message().to_string()))?
            }
        };
        if repo.find_commit(oid).is_err() {
            let cache = self.cache_path(url);
            let cache_url = cache.to_string_lossy().into_owned();
            let mut remote = repo
                .remote_anonymous(&cache_url)
                .map_err(|e| err(e.message().to_string()))?;
            let spec = format!("+{0}:{0}", pin_ref(oid));
            let mut opts = FetchOptions::new();
            opts.download_tags(AutotagOption::None);
            remote
                .fetch(&[spec.as_str()], Some(&mut opts), None)
                .map_err(|e| err(format!("copying from the cache: {}", e.message())))?;
        }
        repo.set_head_detached(oid)
            .map_err(|e| err(e.message().to_string()))?;
        repo.checkout_head(Some(CheckoutBuilder::new().force()))
            .map_err(|e| err(e.message().to_string()))?;
        Ok(())
    }

    /// Where `spec` (a possibly abbreviated commit id) stands against the
    /// branch whose head is `head`.
    pub fn commit_in_branch(&self, url: &str, spec: &str, head: &str) -> Result<Pinned, GitError> {
        let repo = self.open_cache(url)?;
        let path = self.cache_path(url);
        let err = |m: String| GitError::Cache {
            path: path.clone(),
            message: m,
        };
        let Ok(obj) = repo.revparse_single(spec) else {
            return Ok(Pinned::Unknown);
        };
        let Ok(commit) = obj.peel_to_commit() else {
            return Ok(Pinned::Unknown);
        };
        let head = Oid::from_str(head).map_err(|e| err(e.message().to_string()))?;
        let id = commit.id();
        let belongs = id == head
            || repo
                .graph_descendant_of(head, id)
                .map_err(|e| err(e.message().to_string()))?;
        Ok(if belongs {
            Pinned::OnBranch(id.to_string())
        } else {
            Pinned::Elsewhere
        })
    }

    /// The commit checked out at `path`, if it is a checkout.
    pub fn head(path: &Path) -> Option<String> {
        let repo = Repository::open(path).ok()?;
        let head = repo.head().ok()?;
        head.target().map(|o| o.to_string())
    }

    /// A file's bytes at `commit`, from the cache.
    pub fn file_at(
        &self,
        url: &str,
        commit: &str,
        file: &str,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let repo = self.open_cache(url)?;
        let path = self.cache_path(url);
        let err = |m: String| GitError::Cache {
            path: path.clone(),
            message: m,
        };
        let oid = Oid::from_str(commit).map_err(|e| err(e.message().to_string()))?;
        let tree = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| err(e.message().to_string()))?;
        let Ok(entry) = tree.get_path(Path::new(file)) else {
            return Ok(None);
        };
        let obj = entry
            .to_object(&repo)
            .map_err(|e| err(e.message().to_string()))?;
        Ok(obj.as_blob().map(|b| b.content().to_vec()))
    }

    fn fetch_options(&self, url: &str) -> FetchOptions<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let creds = self.credentials.clone();
        let shown = redact_url(url);
        let mut offered = false;
        callbacks.credentials(move |_url, user_from_url, _allowed| {
            // Offer each credential once: a second ask means it was refused,
            // and offering it again only hammers the server (C08).
            match (&creds, offered) {
                (Some(c), false) => {
                    offered = true;
                    Cred::userpass_plaintext(&c.username, &c.password)
                }
                (Some(c), true) => Err(git2::Error::new(
                    git2::ErrorCode::Auth,
                    git2::ErrorClass::Http,
                    format!("authentication failed for {shown} as {} (HTTP 401)", c.username),
                )),
                (None, _) => Err(git2::Error::new(
                    git2::ErrorCode::Auth,
                    git2::ErrorClass::Http,
                    format!(
                        "{shown} asks for credentials{}; give the agent --git-username and SDP_GIT_PASSWORD",
                        user_from_url.map(|u| format!(" for {u}")).unwrap_or_default()
                    ),
                )),
            }
        });
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks);
        opts.download_tags(AutotagOption::None);
        opts
    }
}

fn tracking_ref(branch: &str) -> String {
    format!("refs/sdp/heads/{}", hex::encode(branch))
}

fn pin_ref(oid: Oid) -> String {
    format!("refs/sdp/commits/{oid}")
}

/// A URL without its user-info (`https://user:token@host` → `https://host`).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

/// Removes any `scheme://user:pass@` user-info a library message may echo.
pub fn redact_text(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://bob:s3cret@git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(
            redact_url("https://git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(redact_url("/srv/git/x.git"), "/srv/git/x.git");
        assert_eq!(
            redact_text("failed for https://a:b@h/x now"),
            "failed for https://h/x now"
        );
    }

    #[test]
    fn tracking_refs_never_nest() {
        // `feature/x` and `feature/x/y` are both plain names in SDP's namespace.
        let a = tracking_ref("feature/x");
        let b = tracking_ref("feature/x/y");
        assert!(!b.starts_with(&format!("{a}/")));
    }
}
