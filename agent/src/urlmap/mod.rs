//! The gateway's URL map: read entries from PHP source and patch literal
//! values in place. No I/O: bytes in, bytes out.
//!
//! Invariants:
//! - Only the bytes of a patched literal change; everything else (BOM, CRLF,
//!   tabs, comments, a trailing `?>` and what follows) is kept byte for byte.
//! - Patching every entry back to its committed value gives the committed
//!   bytes exactly.
//! - A key that is missing, assigned more than once, compound-assigned or
//!   computed is refused with the key, the line(s) and the reason.

mod lexer;
mod literal;
mod reader;

use std::collections::BTreeMap;

pub use lexer::LexError;
pub use literal::{decode, encode};
pub use reader::{Entry, Literal, Quote, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the file is not valid PHP as far as SDP can read it: {0}")]
    Syntax(#[from] LexError),
    #[error("key `{key}` is not in the URL map")]
    Missing { key: String },
    #[error(
        "key `{key}` is assigned more than once (lines {lines}); SDP patches only a key assigned exactly once"
    )]
    Duplicate { key: String, lines: String },
    #[error(
        "key `{key}` is changed with `{op}` (at {lines}); SDP cannot patch a value built over several statements"
    )]
    Compound {
        key: String,
        lines: String,
        op: String,
    },
    #[error(
        "key `{key}` is overwritten by a computed assignment to {whole} at line {line} ({reason}); SDP cannot tell what it ends up as"
    )]
    Overwritten {
        key: String,
        whole: String,
        line: usize,
        reason: String,
    },
    #[error(
        "key `{key}` at line {line} is computed, not a literal ({reason}); make it a plain string to let SDP route it"
    )]
    Computed {
        key: String,
        line: usize,
        reason: String,
    },
}

/// The entries of one PHP file.
#[derive(Clone, Debug)]
pub struct UrlMap {
    entries: Vec<Entry>,
}

impl UrlMap {
    pub fn parse(src: &[u8]) -> Result<Self, MapError> {
        Ok(Self {
            entries: reader::read(src)?,
        })
    }

    /// Every entry found, in file order (keys may repeat).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The one assignment of `key`, if it is a literal or an env fallback.
    pub fn entry(&self, key: &str) -> Result<&Entry, MapError> {
        let found: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.key == key && !key.is_empty())
            .collect();
        let key_s = key.to_string();
        let lines = |es: &[&Entry]| {
            es.iter()
                .map(|e| e.line.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A computed value given to a parent (or the whole variable) decides
        // what this key ends up as, whatever the literal says.
        let overwritten = self.entries.iter().find(|a| {
            let is_parent = a.key.is_empty() || key.starts_with(&format!("{}.", a.key));
            let same_root = found.is_empty() || found.iter().any(|f| f.root == a.root);
            is_parent
                && a.key != key
                && same_root
                && !matches!(a.value, Value::Literal(_) | Value::EnvFallback { .. })
                && a.root.starts_with('$')
        });
        if let Some(a) = overwritten
            && !found.is_empty()
        {
            let whole = if a.key.is_empty() {
                format!("all of {}", a.root)
            } else {
                format!("{}['{}']", a.root, a.key.replace('.', "']['"))
            };
            let reason = match &a.value {
                Value::Computed { reason } => reason.clone(),
                _ => String::new(),
            };
            return Err(MapError::Overwritten {
                key: key_s,
                whole,
                line: a.line,
                reason,
            });
        }
        if let Some(c) = found.iter().find(|e| e.op != "=") {
            let at = if found.len() == 1 {
                format!("line {}", found[0].line)
            } else {
                format!("lines {}", lines(&found))
            };
            return Err(MapError::Compound {
                key: key_s,
                lines: at,
                op: c.op.clone(),
            });
        }
        match found.as_slice() {
            [] => Err(MapError::Missing { key: key_s }),
            [one] => match &one.value {
                Value::Computed { reason } => Err(MapError::Computed {
                    key: key_s,
                    line: one.line,
                    reason: reason.clone(),
                }),
                _ => Ok(one),
            },
            many => Err(MapError::Duplicate {
                key: key_s,
                lines: lines(many),
            }),
        }
    }

    /// The literal a patch of `key` would rewrite.
    pub fn literal(&self, key: &str) -> Result<&Literal, MapError> {
        Ok(match &self.entry(key)?.value {
            Value::Literal(l) => l,
            Value::EnvFallback { default, .. } => default,
            Value::Computed { .. } => unreachable!("entry() refuses computed values"),
        })
    }

    /// The value the file gives `key` (the fallback, for env entries).
    pub fn value(&self, key: &str) -> Result<String, MapError> {
        Ok(self.literal(key)?.value.clone())
    }

    /// The environment variable that overrides `key`, if any.
    pub fn env_override(&self, key: &str) -> Option<&str> {
        match self.entry(key).ok()?.value {
            Value::EnvFallback { ref var, .. } => Some(var),
            _ => None,
        }
    }
}

/// Sets each key to its value; every key must be patchable or nothing is.
pub fn patch(src: &[u8], edits: &BTreeMap<String, String>) -> Result<Vec<u8>, MapError> {
    let map = UrlMap::parse(src)?;
    let mut splices = Vec::with_capacity(edits.len());
    for (key, value) in edits {
        let lit = map.literal(key)?;
        if lit.value != *value {
            splices.push((lit.span.clone(), encode(value, lit.quote)));
        }
    }
    splices.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = src.to_vec();
    for (span, text) in splices {
        out.splice(span, text.into_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
