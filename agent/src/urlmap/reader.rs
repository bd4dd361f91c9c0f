//! Finds URL map entries in PHP source, on tokens: `$config['key'] = '...'`
//! (any variable, nested `['a']['b']` keys), keys of returned or assigned
//! arrays (`'key' => '...'`, `array(...)`, nested into dotted keys),
//! `define('KEY', '...')` and `const KEY = '...'`. Each entry says whether its
//! value is a plain literal (patchable), an environment fallback, or computed.

use std::ops::Range;

use super::lexer::{LexError, TokKind, Token, line_of, tokenize};

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
    /// Dotted path: `eredar_url`, `services.eredar.url`.
    pub key: String,
    pub line: usize,
    /// `=` or a compound operator such as `.=`.
    pub op: String,
    pub value: Value,
}

pub fn read(src: &[u8]) -> Result<Vec<Entry>, LexError> {
    let tokens = tokenize(src)?;
    let sig: Vec<Token> = tokens.into_iter().filter(|t| !t.is_trivia()).collect();
    let mut r = Reader {
        src,
        sig,
        entries: Vec::new(),
    };
    r.statements();
    Ok(r.entries)
}

struct Reader<'a> {
    src: &'a [u8],
    sig: Vec<Token>,
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

    fn is_ident(&self, i: usize, name: &str) -> bool {
        self.sig.get(i).is_some_and(|t| t.kind == TokKind::Ident)
            && self.text(i).eq_ignore_ascii_case(name.as_bytes())
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

    fn line(&self, i: usize) -> usize {
        self.sig
            .get(i)
            .map_or(1, |t| line_of(self.src, t.span.start))
    }

    fn statements(&mut self) {
        let mut i = 0;
        while i < self.sig.len() {
            if let Some(next) = self.assignment(i) {
                i = next;
            } else if self.is_ident(i, "return") {
                i = self.value(i + 1, Some(Vec::new()));
            } else if self.is_ident(i, "define")
                && self.is_punct(i + 1, "(")
                && self.is_punct(i + 3, ",")
            {
                match self.literal(i + 2) {
                    Some(name) => i = self.value(i + 4, Some(vec![name.value])),
                    None => i += 1,
                }
            } else if self.is_ident(i, "const")
                && self
                    .sig
                    .get(i + 1)
                    .is_some_and(|t| t.kind == TokKind::Ident)
                && self.is_punct(i + 2, "=")
            {
                let name = String::from_utf8_lossy(self.text(i + 1)).into_owned();
                i = self.value(i + 3, Some(vec![name]));
            } else {
                i += 1;
            }
        }
    }

    /// `$var['a']['b'] <op> value`: returns the index after it, if it is one.
    fn assignment(&mut self, i: usize) -> Option<usize> {
        if self.sig.get(i)?.kind != TokKind::Variable {
            return None;
        }
        let mut path = Vec::new();
        let mut j = i + 1;
        while self.is_punct(j, "[") && self.is_punct(j + 2, "]") {
            path.push(self.literal(j + 1)?.value);
            j += 3;
        }
        if path.is_empty() {
            return None;
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
            return Some(self.value(j + 1, Some(path)));
        }
        let line = self.line(i);
        let end = self.value(j + 1, None);
        self.entries.push(Entry {
            key: path.join("."),
            line,
            op,
            value: Value::Computed {
                reason: "compound assignment".into(),
            },
        });
        Some(end)
    }

    /// Reads one value starting at `i`, recording it (and array members
    /// under it) when `path` is given. Returns the index of the terminator.
    fn value(&mut self, i: usize, path: Option<Vec<String>>) -> usize {
        if self.is_punct(i, "[") || (self.is_ident(i, "array") && self.is_punct(i + 1, "(")) {
            let end = self.array(i, path);
            return self.skip_to_terminator(end);
        }
        let end = self.skip_to_terminator(i);
        if let Some(path) = path
            && !path.is_empty()
        {
            let value = self.classify(i, end);
            self.entries.push(Entry {
                key: path.join("."),
                line: self.line(i),
                op: "=".into(),
                value,
            });
        }
        end
    }

    /// `[ ... ]` or `array( ... )` at `i`; returns the index after the close.
    fn array(&mut self, i: usize, path: Option<Vec<String>>) -> usize {
        let (close, mut j) = if self.is_punct(i, "[") {
            ("]", i + 1)
        } else {
            (")", i + 2)
        };
        loop {
            if j >= self.sig.len() {
                return j;
            }
            if self.is_punct(j, close) {
                return j + 1;
            }
            let item_path = match (&path, self.literal(j)) {
                (Some(p), Some(key)) if self.is_punct(j + 1, "=>") => {
                    j += 2;
                    let mut p = p.clone();
                    p.push(key.value);
                    Some(p)
                }
                _ => {
                    // Positional item, or a key that is not a plain string.
                    if let Some(arrow) =
                        (j..self.skip_to_terminator(j)).find(|&k| self.is_punct(k, "=>"))
                    {
                        j = arrow + 1;
                    }
                    None
                }
            };
            j = self.value(j, item_path);
            if self.is_punct(j, ",") {
                j += 1;
            } else if !self.is_punct(j, close) {
                // Unbalanced input: step over the stray token rather than loop.
                j += 1;
            }
        }
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
        let n = end - start;
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
        // getenv('VAR') ?: 'default'  (also `??`)
        if self.is_ident(start, "getenv")
            && self.is_punct(start + 1, "(")
            && self.is_punct(start + 3, ")")
            && let Some(var) = self.literal(start + 2)
        {
            let fallback_at =
                if n == 7 && self.is_punct(start + 4, "?") && self.is_punct(start + 5, ":") {
                    Some(start + 6)
                } else if n == 6 && self.is_punct(start + 4, "??") {
                    Some(start + 5)
                } else {
                    None
                };
            if let Some(default) = fallback_at.and_then(|k| self.literal(k)) {
                return Value::EnvFallback {
                    var: var.value,
                    default,
                };
            }
        }
        let reason = if (start..end).any(|k| self.is_punct(k, ".")) {
            "it is a concatenation".to_string()
        } else if let Some(k) =
            (start..end).find(|&k| self.sig[k].kind == TokKind::Ident && self.is_punct(k + 1, "("))
        {
            format!("it calls {}()", String::from_utf8_lossy(self.text(k)))
        } else if (start..end).any(|k| self.sig[k].kind == TokKind::Variable) {
            "it uses a variable".to_string()
        } else {
            "it is an expression".to_string()
        };
        Value::Computed { reason }
    }
}

/// The value PHP gives a string literal's body.
pub fn decode(raw: &[u8], quote: Quote) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' || i + 1 >= raw.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = raw[i + 1];
        match (quote, n) {
            (Quote::Single, b'\\' | b'\'') => {
                out.push(n);
                i += 2;
            }
            (Quote::Single, _) => {
                out.push(c);
                i += 1;
            }
            (Quote::Double, _) => {
                let (bytes, used) = double_escape(&raw[i + 1..]);
                out.extend_from_slice(&bytes);
                i += 1 + used;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One escape after a backslash in a double-quoted string: (bytes, consumed).
fn double_escape(r: &[u8]) -> (Vec<u8>, usize) {
    let simple = |b: u8| (vec![b], 1);
    match r[0] {
        b'n' => simple(b'\n'),
        b't' => simple(b'\t'),
        b'r' => simple(b'\r'),
        b'v' => simple(0x0b),
        b'e' => simple(0x1b),
        b'f' => simple(0x0c),
        b'\\' | b'$' | b'"' => simple(r[0]),
        b'0'..=b'7' => {
            let len = r
                .iter()
                .take(3)
                .take_while(|b| (b'0'..=b'7').contains(b))
                .count();
            let v =
                u32::from_str_radix(std::str::from_utf8(&r[..len]).unwrap_or("0"), 8).unwrap_or(0);
            (vec![(v & 0xff) as u8], len)
        }
        b'x' => {
            let len = r[1..]
                .iter()
                .take(2)
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if len == 0 {
                return (vec![b'\\', b'x'], 1);
            }
            let v = u8::from_str_radix(std::str::from_utf8(&r[1..1 + len]).unwrap_or("0"), 16)
                .unwrap_or(0);
            (vec![v], 1 + len)
        }
        b'u' if r.get(1) == Some(&b'{') => match r.iter().position(|&b| b == b'}') {
            Some(close) => {
                let hex = std::str::from_utf8(&r[2..close]).unwrap_or("");
                match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => (ch.to_string().into_bytes(), close + 1),
                    None => (vec![b'\\', b'u'], 1),
                }
            }
            None => (vec![b'\\', b'u'], 1),
        },
        other => (vec![b'\\', other], 1),
    }
}

/// A literal for `value` in the given quoting, escaped so PHP reads exactly
/// `value` back (a `$` in double quotes never becomes interpolation).
pub fn encode(value: &str, quote: Quote) -> String {
    match quote {
        Quote::Single => {
            let mut s = String::from("'");
            for ch in value.chars() {
                if ch == '\\' || ch == '\'' {
                    s.push('\\');
                }
                s.push(ch);
            }
            s.push('\'');
            s
        }
        Quote::Double => {
            let mut s = String::from("\"");
            for ch in value.chars() {
                match ch {
                    '\\' => s.push_str("\\\\"),
                    '"' => s.push_str("\\\""),
                    '$' => s.push_str("\\$"),
                    '\n' => s.push_str("\\n"),
                    '\t' => s.push_str("\\t"),
                    '\r' => s.push_str("\\r"),
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        s.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => s.push(c),
                }
            }
            s.push('"');
            s
        }
    }
}
