//! Finds URL map entries in PHP source, on tokens: `$config['key'] = '...'`
//! (any variable, nested `['a']['b']` keys), arrays assigned to a variable or
//! returned (`'key' => '...'`, `array(...)`, nested into dotted keys,
//! positional items by index), `define('KEY', '...')` and `const KEY = '...'`.
//! Each entry says whether its value is a plain literal (patchable), an
//! environment fallback, or computed. Function and class bodies are not
//! configuration and are skipped.

use std::ops::Range;

use super::lexer::{LexError, TokKind, Token, tokenize};
use super::literal::decode;

/// Deeper arrays than this are not read (and so not routable): a URL map is
/// never that deep, and recursion must stay bounded.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    Single,
    Double,
}

/// A string literal in the file: the exact bytes (quotes included) and the
/// value PHP sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Literal {
    pub span: Range<usize>,
    pub quote: Quote,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Literal(Literal),
    /// `env('VAR', 'default')` or `getenv('VAR') ?: 'default'`: the file
    /// holds only the fallback; the container's environment wins.
    EnvFallback {
        var: String,
        default: Literal,
    },
    /// Anything else; `reason` says what, in plain words.
    Computed {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What the key lives in: a variable (`$config`), `return`, `define`, `const`.
    pub root: String,
    /// Dotted path: `eredar_url`, `services.eredar.url`; empty when the
    /// whole variable is assigned.
    pub key: String,
    pub line: usize,
    /// `=` or a compound operator such as `.=`.
    pub op: String,
    pub value: Value,
}

pub fn read(src: &[u8]) -> Result<Vec<Entry>, LexError> {
    let tokens = tokenize(src)?;
    let sig: Vec<Token> = tokens.into_iter().filter(|t| !t.is_trivia()).collect();
    let newlines = src
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut r = Reader {
        src,
        sig,
        newlines,
        entries: Vec::new(),
    };
    r.statements();
    Ok(r.entries)
}

struct Reader<'a> {
    src: &'a [u8],
    sig: Vec<Token>,
    /// Offsets of every `\n`, for line numbers in O(log n).
    newlines: Vec<usize>,
    entries: Vec<Entry>,
}

impl Reader<'_> {
    fn text(&self, i: usize) -> &[u8] {
        self.sig
            .get(i)
            .map_or(&[][..], |t| &self.src[t.span.clone()])
    }

    fn is_punct(&self, i: usize, p: &str) -> bool {
        self.sig.get(i).is_some_and(|t| t.kind == TokKind::Punct) && self.text(i) == p.as_bytes()
    }

    /// A name, with or without a leading `\` (`\define` is `define`).
    fn is_ident(&self, i: usize, name: &str) -> bool {
        self.sig.get(i).is_some_and(|t| t.kind == TokKind::Ident) && {
            let t = self.text(i);
            let t = t.strip_prefix(b"\\").unwrap_or(t);
            t.eq_ignore_ascii_case(name.as_bytes())
        }
    }

    /// A plain (non-interpolated) string token, decoded.
    fn literal(&self, i: usize) -> Option<Literal> {
        let t = self.sig.get(i)?;
        let quote = match t.kind {
            TokKind::SingleQuoted => Quote::Single,
            TokKind::DoubleQuoted {
                interpolated: false,
            } => Quote::Double,
            _ => return None,
        };
        let raw = &self.src[t.span.start + 1..t.span.end - 1];
        Some(Literal {
            span: t.span.clone(),
            quote,
            value: decode(raw, quote),
        })
    }

    /// An array key: a plain string, or an integer.
    fn key_at(&self, i: usize) -> Option<String> {
        if let Some(l) = self.literal(i) {
            return Some(l.value);
        }
        let t = self.sig.get(i)?;
        let text = std::str::from_utf8(self.text(i)).ok()?;
        (t.kind == TokKind::Number && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.to_string())
    }

    fn line(&self, i: usize) -> usize {
        let offset = match self.sig.get(i).or(self.sig.last()) {
            Some(t) => t.span.start,
            None => return 1,
        };
        self.newlines.partition_point(|&n| n < offset) + 1
    }

    fn push(&mut self, root: &str, path: &[String], at: usize, op: &str, value: Value) {
        self.entries.push(Entry {
            root: root.to_string(),
            key: path.join("."),
            line: self.line(at),
            op: op.into(),
            value,
        });
    }

    fn statements(&mut self) {
        let mut i = 0;
        while i < self.sig.len() {
            if self.is_ident(i, "function") || self.is_ident(i, "fn") {
                i = self.skip_function(i);
            } else if ["class", "interface", "trait", "enum"]
                .iter()
                .any(|k| self.is_ident(i, k))
                && self
                    .sig
                    .get(i + 1)
                    .is_some_and(|t| t.kind == TokKind::Ident)
            {
                i = self.skip_block_after(i);
            } else if let Some(next) = self.assignment(i) {
                i = next;
            } else if self.is_ident(i, "return") {
                self.value(i + 1, "return", Some(Vec::new()), 0);
                i += 1;
            } else if self.is_ident(i, "define")
                && self.is_punct(i + 1, "(")
                && self.is_punct(i + 3, ",")
            {
                match self.literal(i + 2) {
                    Some(name) => i = self.value(i + 4, "define", Some(vec![name.value]), 0),
                    None => i += 1,
                }
            } else if self.is_ident(i, "const") {
                i = self.consts(i + 1);
            } else {
                i += 1;
            }
        }
    }

    /// `const A = ..., B = ...;`
    fn consts(&mut self, mut i: usize) -> usize {
        while self.sig.get(i).is_some_and(|t| t.kind == TokKind::Ident) && self.is_punct(i + 1, "=")
        {
            let name = String::from_utf8_lossy(self.text(i)).into_owned();
            i = self.value(i + 2, "const", Some(vec![name]), 0);
            if !self.is_punct(i, ",") {
                break;
            }
            i += 1;
        }
        i
    }

    /// Index after a function's body (or, for `fn`, after its expression).
    fn skip_function(&self, i: usize) -> usize {
        if self.is_ident(i, "fn") {
            let arrow = (i..self.sig.len())
                .find(|&k| self.is_punct(k, "=>"))
                .unwrap_or(self.sig.len());
            return self.skip_to_terminator(arrow + 1);
        }
        self.skip_block_after(i)
    }

    /// Index after the `{ ... }` block that follows `i` (the statement's own
    /// block: a `;` first means there is none, as in an abstract method).
    fn skip_block_after(&self, i: usize) -> usize {
        let mut k = i + 1;
        let mut parens = 0usize;
        while k < self.sig.len() {
            if self.is_punct(k, "(") {
                parens += 1;
            } else if self.is_punct(k, ")") {
                parens = parens.saturating_sub(1);
            } else if parens == 0 && self.is_punct(k, ";") {
                return k + 1;
            } else if parens == 0 && self.is_punct(k, "{") {
                return self.matching(k, "{", "}") + 1;
            }
            k += 1;
        }
        k
    }

    /// Index of the token closing the bracket opened at `open`.
    fn matching(&self, open: usize, o: &str, c: &str) -> usize {
        let mut depth = 0usize;
        for k in open..self.sig.len() {
            if self.is_punct(k, o) {
                depth += 1;
            } else if self.is_punct(k, c) {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
        }
        self.sig.len()
    }

    /// `$var['a']['b'] <op> value`, or `$var = value`: returns the index right
    /// after the operator (the value is scanned on, so chained assignments
    /// inside it are found too), if it is one.
    fn assignment(&mut self, i: usize) -> Option<usize> {
        if self.sig.get(i)?.kind != TokKind::Variable {
            return None;
        }
        let root = String::from_utf8_lossy(self.text(i)).into_owned();
        let mut path = Vec::new();
        let mut j = i + 1;
        while self.is_punct(j, "[") && self.is_punct(j + 2, "]") {
            path.push(self.key_at(j + 1)?);
            j += 3;
        }
        if self.is_punct(j, "[") {
            return None; // a computed or appended (`[]`) key: not a map entry
        }
        let op_tok = self.sig.get(j)?;
        let op = std::str::from_utf8(self.text(j)).ok()?.to_string();
        let is_assign = op_tok.kind == TokKind::Punct
            && op.ends_with('=')
            && !matches!(
                op.as_str(),
                "==" | "===" | "!=" | "!==" | "<=" | ">=" | "<=>"
            );
        if !is_assign {
            return None;
        }
        if op == "=" {
            let is_array = self.is_punct(j + 1, "[")
                || (self.is_ident(j + 1, "array") && self.is_punct(j + 2, "("));
            if path.is_empty() && is_array {
                self.value(j + 1, &root, Some(Vec::new()), 0);
            } else if path.is_empty() {
                // The whole variable gets a computed value: every key in it
                // is beyond SDP's reach.
                let end = self.skip_to_terminator(j + 1);
                let value = self.classify(j + 1, end);
                self.push(&root, &[], i, "=", value);
            } else {
                let end = self.skip_to_terminator(j + 1);
                if is_array {
                    self.value(j + 1, &root, Some(path), 0);
                } else {
                    let value = self.classify(j + 1, end);
                    self.push(&root, &path, i, "=", value);
                }
            }
            return Some(j + 1);
        }
        let line_at = i;
        self.push(
            &root,
            &path,
            line_at,
            &op,
            Value::Computed {
                reason: "compound assignment".into(),
            },
        );
        Some(j + 1)
    }

    /// Reads one value starting at `i`, recording it (and array members under
    /// it) when `path` is given. Returns the index of the terminator.
    fn value(&mut self, i: usize, root: &str, path: Option<Vec<String>>, depth: usize) -> usize {
        if self.is_punct(i, "[") || (self.is_ident(i, "array") && self.is_punct(i + 1, "(")) {
            let end = self.array(i, root, path, depth + 1);
            return self.skip_to_terminator(end);
        }
        let end = self.skip_to_terminator(i);
        if let Some(path) = path
            && !path.is_empty()
        {
            let value = self.classify(i, end);
            let at = i.saturating_sub(1);
            self.push(root, &path, at, "=", value);
        }
        end
    }

    /// `[ ... ]` or `array( ... )` at `i`; returns the index after the close.
    fn array(&mut self, i: usize, root: &str, path: Option<Vec<String>>, depth: usize) -> usize {
        let (open, close, mut j) = if self.is_punct(i, "[") {
            ("[", "]", i + 1)
        } else {
            ("(", ")", i + 2)
        };
        if depth > MAX_DEPTH {
            return self.matching(if open == "[" { i } else { i + 1 }, open, close) + 1;
        }
        let mut next_index: u64 = 0;
        loop {
            if j >= self.sig.len() {
                return j;
            }
            if self.is_punct(j, close) {
                return j + 1;
            }
            let item_end = self.skip_to_terminator(j);
            let arrow = self.arrow_at_depth0(j, item_end);
            let (segment, value_at) = match arrow {
                Some(k) if k == j + 1 => match self.key_at(j) {
                    Some(key) => {
                        if let Ok(n) = key.parse::<u64>() {
                            next_index = next_index.max(n.saturating_add(1));
                        }
                        (Some(key), k + 1)
                    }
                    None => (None, k + 1),
                },
                Some(k) => (None, k + 1), // a computed key
                None if self.is_punct(j, "...") => (None, j + 1),
                None => {
                    let n = next_index;
                    next_index += 1;
                    (Some(n.to_string()), j)
                }
            };
            let item_path = match (&path, segment) {
                (Some(p), Some(seg)) => {
                    let mut p = p.clone();
                    p.push(seg);
                    Some(p)
                }
                _ => None,
            };
            let key_at = j;
            j = self.value_with_line(value_at, root, item_path, depth, key_at);
            if self.is_punct(j, ",") {
                j += 1;
            } else if !self.is_punct(j, close) {
                // Unbalanced input: step over the stray token rather than loop.
                j += 1;
            }
        }
    }

    /// Like `value`, but the entry's line is the item's (its key's) line.
    fn value_with_line(
        &mut self,
        i: usize,
        root: &str,
        path: Option<Vec<String>>,
        depth: usize,
        line_at: usize,
    ) -> usize {
        let before = self.entries.len();
        let end = self.value(i, root, path, depth);
        if self.entries.len() == before + 1 {
            let line = self.line(line_at);
            if let Some(e) = self.entries.last_mut() {
                e.line = line;
            }
        }
        end
    }

    /// The `=>` of an array item, if it is at the item's own level.
    fn arrow_at_depth0(&self, from: usize, to: usize) -> Option<usize> {
        let mut depth = 0usize;
        for k in from..to {
            if self.sig[k].kind != TokKind::Punct {
                continue;
            }
            match self.text(k) {
                b"(" | b"[" | b"{" => depth += 1,
                b")" | b"]" | b"}" => depth = depth.saturating_sub(1),
                b"=>" if depth == 0 => return Some(k),
                _ => {}
            }
        }
        None
    }

    /// Index of the first `;` `,` `)` `]` `}` or `?>` at nesting depth 0.
    fn skip_to_terminator(&self, mut i: usize) -> usize {
        let mut depth = 0usize;
        while i < self.sig.len() {
            let t = &self.sig[i];
            if t.kind == TokKind::CloseTag && depth == 0 {
                return i;
            }
            if t.kind == TokKind::Punct {
                match self.text(i) {
                    b"(" | b"[" | b"{" => depth += 1,
                    b")" | b"]" | b"}" => {
                        if depth == 0 {
                            return i;
                        }
                        depth -= 1;
                    }
                    b";" | b"," if depth == 0 => return i,
                    _ => {}
                }
            }
            i += 1;
        }
        i
    }

    /// What the tokens `start..end` are, as far as patching is concerned.
    fn classify(&self, start: usize, end: usize) -> Value {
        let n = end.saturating_sub(start);
        if n == 0 {
            return Value::Computed {
                reason: "it has no value".into(),
            };
        }
        if n == 1 {
            if let Some(lit) = self.literal(start) {
                return Value::Literal(lit);
            }
            return Value::Computed {
                reason: match self.sig[start].kind {
                    TokKind::DoubleQuoted { interpolated: true } => {
                        "it interpolates a variable".into()
                    }
                    TokKind::OtherString => "it is a heredoc, nowdoc or shell string".into(),
                    TokKind::Variable => "it is a variable".into(),
                    _ => format!(
                        "`{}` is not a string",
                        String::from_utf8_lossy(self.text(start))
                    ),
                },
            };
        }
        // env('VAR', 'default')
        if n == 6
            && self.is_ident(start, "env")
            && self.is_punct(start + 1, "(")
            && self.is_punct(start + 3, ",")
            && self.is_punct(start + 5, ")")
            && let (Some(var), Some(default)) = (self.literal(start + 2), self.literal(start + 4))
        {
            return Value::EnvFallback {
                var: var.value,
                default,
            };
        }
        // getenv('VAR') ?: 'default' (getenv gives false, never null: `??` would not fall back)
        if n == 7
            && self.is_ident(start, "getenv")
            && self.is_punct(start + 1, "(")
            && self.is_punct(start + 3, ")")
            && self.is_punct(start + 4, "?")
            && self.is_punct(start + 5, ":")
            && let (Some(var), Some(default)) = (self.literal(start + 2), self.literal(start + 6))
        {
            return Value::EnvFallback {
                var: var.value,
                default,
            };
        }
        let reason = if (start..end).any(|k| self.is_punct(k, ".")) {
            "it is a concatenation".to_string()
        } else if let Some(k) =
            (start..end).find(|&k| self.sig[k].kind == TokKind::Ident && self.is_punct(k + 1, "("))
        {
            format!(
                "it calls {}()",
                String::from_utf8_lossy(self.text(k)).trim_start_matches('\\')
            )
        } else if (start..end).any(|k| self.sig[k].kind == TokKind::Variable) {
            "it uses a variable".to_string()
        } else {
            "it is an expression".to_string()
        };
        Value::Computed { reason }
    }
}
