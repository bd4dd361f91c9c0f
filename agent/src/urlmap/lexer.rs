//! A PHP tokenizer, enough to find URL map entries without ever matching
//! inside comments, strings, heredocs or inline HTML. Works on bytes and keeps
//! exact spans, so patches touch nothing but a literal's own bytes.

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokKind {
    /// Text outside `<?php ... ?>` (including a BOM before the open tag).
    InlineHtml,
    OpenTag,
    CloseTag,
    Whitespace,
    Comment,
    /// `$name`
    Variable,
    /// Names and keywords: `define`, `return`, `array`, `env`, `TRUE`, ...
    Ident,
    /// `'...'`
    SingleQuoted,
    /// `"..."`; `interpolated` when it contains `$var` or `{$`.
    DoubleQuoted {
        interpolated: bool,
    },
    /// `<<<ID`, `<<<'ID'` blocks, and backtick shell strings.
    OtherString,
    Number,
    Punct,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokKind,
    pub span: Range<usize>,
}

impl Token {
    /// Tokens with no meaning for the URL map. `?>` is not trivia: it ends a
    /// statement like `;` does.
    pub fn is_trivia(&self) -> bool {
        matches!(
            self.kind,
            TokKind::Whitespace | TokKind::Comment | TokKind::InlineHtml | TokKind::OpenTag
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// Multi-character operators, longest first.
const PUNCTS: &[&str] = &[
    "<=>", "**=", "...", "<<=", ">>=", "===", "!==", "??=", "?->", "::", "=>", "->", "==", "!=",
    "<>", "<=", ">=", "&&", "||", "??", ".=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "++",
    "--", "<<", ">>", "**",
];

pub fn tokenize(src: &[u8]) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src,
        pos: 0,
        out: Vec::new(),
    };
    lx.run()?;
    Ok(lx.out)
}

/// 1-based line of a byte offset.
pub fn line_of(src: &[u8], offset: usize) -> usize {
    src[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<Token>,
}

impl Lexer<'_> {
    fn push(&mut self, kind: TokKind, start: usize) {
        self.out.push(Token {
            kind,
            span: start..self.pos,
        });
    }

    fn rest(&self) -> &[u8] {
        &self.src[self.pos..]
    }

    fn err(&self, at: usize, message: impl Into<String>) -> LexError {
        LexError {
            line: line_of(self.src, at),
            message: message.into(),
        }
    }

    fn run(&mut self) -> Result<(), LexError> {
        while self.pos < self.src.len() {
            self.inline_html();
            if self.pos >= self.src.len() {
                break;
            }
            self.php()?;
        }
        Ok(())
    }

    fn inline_html(&mut self) {
        let start = self.pos;
        while self.pos < self.src.len() {
            if let Some(len) = open_tag_len(self.rest()) {
                if self.pos > start {
                    self.push(TokKind::InlineHtml, start);
                }
                let tag_start = self.pos;
                self.pos += len;
                self.push(TokKind::OpenTag, tag_start);
                return;
            }
            self.pos += 1;
        }
        if self.pos > start {
            self.push(TokKind::InlineHtml, start);
        }
    }

    /// Code until `?>` or the end of the file.
    fn php(&mut self) -> Result<(), LexError> {
        while self.pos < self.src.len() {
            let start = self.pos;
            let c = self.src[self.pos];
            let r = self.rest();
            if r.starts_with(b"?>") {
                self.pos += 2;
                self.push(TokKind::CloseTag, start);
                return Ok(());
            }
            if c.is_ascii_whitespace() {
                while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
                    self.pos += 1;
                }
                self.push(TokKind::Whitespace, start);
            } else if r.starts_with(b"//") || (c == b'#' && !r.starts_with(b"#[")) {
                // A line comment ends at the newline or at `?>`.
                while self.pos < self.src.len()
                    && self.src[self.pos] != b'\n'
                    && !self.rest().starts_with(b"?>")
                {
                    self.pos += 1;
                }
                self.push(TokKind::Comment, start);
            } else if r.starts_with(b"/*") {
                let end = find(&r[2..], b"*/")
                    .ok_or_else(|| self.err(start, "unterminated /* comment"))?;
                self.pos += 2 + end + 2;
                self.push(TokKind::Comment, start);
            } else if c == b'\'' {
                self.quoted(b'\'', start)?;
                self.push(TokKind::SingleQuoted, start);
            } else if c == b'"' {
                let interpolated = self.quoted(b'"', start)?;
                self.push(TokKind::DoubleQuoted { interpolated }, start);
            } else if c == b'`' {
                self.quoted(b'`', start)?;
                self.push(TokKind::OtherString, start);
            } else if r.starts_with(b"<<<") {
                self.heredoc(start)?;
                self.push(TokKind::OtherString, start);
            } else if c == b'$' && r.get(1).is_some_and(|&b| is_ident_start(b)) {
                self.pos += 1;
                self.ident_chars();
                self.push(TokKind::Variable, start);
            } else if is_ident_start(c)
                || (c == b'\\' && r.get(1).is_some_and(|&b| is_ident_start(b)))
            {
                self.pos += 1;
                while self.pos < self.src.len()
                    && (is_ident_char(self.src[self.pos]) || self.src[self.pos] == b'\\')
                {
                    self.pos += 1;
                }
                self.push(TokKind::Ident, start);
                if self.src[start..self.pos].eq_ignore_ascii_case(b"__halt_compiler") {
                    self.halt();
                    return Ok(());
                }
            } else if c.is_ascii_digit() {
                while self.pos < self.src.len()
                    && (self.src[self.pos].is_ascii_alphanumeric()
                        || matches!(self.src[self.pos], b'.' | b'_'))
                {
                    self.pos += 1;
                }
                self.push(TokKind::Number, start);
            } else {
                let len = PUNCTS
                    .iter()
                    .find(|p| r.starts_with(p.as_bytes()))
                    .map_or(1, |p| p.len());
                self.pos += len;
                self.push(TokKind::Punct, start);
            }
        }
        Ok(())
    }

    /// After `__halt_compiler();` the rest of the file is data, not code.
    fn halt(&mut self) {
        while self.pos < self.src.len()
            && self.src[self.pos] != b';'
            && !self.rest().starts_with(b"?>")
        {
            self.pos += 1;
        }
        if self.pos < self.src.len() {
            let start = self.pos;
            self.pos += if self.src[self.pos] == b';' { 1 } else { 2 };
            self.push(TokKind::Punct, start);
        }
        if self.pos < self.src.len() {
            let start = self.pos;
            self.pos = self.src.len();
            self.push(TokKind::InlineHtml, start);
        }
    }

    fn ident_chars(&mut self) {
        while self.pos < self.src.len() && is_ident_char(self.src[self.pos]) {
            self.pos += 1;
        }
    }

    /// Skips a quoted string; returns whether a `"` string interpolates.
    fn quoted(&mut self, quote: u8, start: usize) -> Result<bool, LexError> {
        self.pos += 1;
        let mut interpolated = false;
        while self.pos < self.src.len() {
            let c = self.src[self.pos];
            if c == b'\\' {
                self.pos += 2;
                continue;
            }
            if c == quote {
                self.pos += 1;
                return Ok(interpolated);
            }
            if quote != b'\'' {
                let next = self.src.get(self.pos + 1).copied();
                if (c == b'$' && next.is_some_and(|b| is_ident_start(b) || b == b'{'))
                    || (c == b'{' && next == Some(b'$'))
                {
                    interpolated = true;
                }
            }
            self.pos += 1;
        }
        Err(self.err(start, "unterminated string"))
    }

    fn heredoc(&mut self, start: usize) -> Result<(), LexError> {
        self.pos += 3;
        while self
            .src
            .get(self.pos)
            .is_some_and(|&b| b == b' ' || b == b'\t')
        {
            self.pos += 1;
        }
        let quote = self
            .src
            .get(self.pos)
            .copied()
            .filter(|&b| b == b'\'' || b == b'"');
        if quote.is_some() {
            self.pos += 1;
        }
        let id_start = self.pos;
        self.ident_chars();
        let id = self.src[id_start..self.pos].to_vec();
        if id.is_empty() {
            return Err(self.err(start, "heredoc without an identifier"));
        }
        if let Some(q) = quote {
            if self.src.get(self.pos) != Some(&q) {
                return Err(self.err(start, "heredoc identifier quote is not closed"));
            }
            self.pos += 1;
        }
        // The closing identifier starts a line (after optional indentation)
        // and is not followed by an identifier character.
        let mut line_start = match find(self.rest(), b"\n") {
            Some(i) => self.pos + i + 1,
            None => return Err(self.err(start, "unterminated heredoc")),
        };
        loop {
            let mut p = line_start;
            while self.src.get(p).is_some_and(|&b| b == b' ' || b == b'\t') {
                p += 1;
            }
            if self.src[p..].starts_with(&id)
                && !self
                    .src
                    .get(p + id.len())
                    .is_some_and(|&b| is_ident_char(b))
            {
                self.pos = p + id.len();
                return Ok(());
            }
            match find(&self.src[line_start..], b"\n") {
                Some(i) => line_start += i + 1,
                None => return Err(self.err(start, "unterminated heredoc")),
            }
        }
    }
}

fn open_tag_len(r: &[u8]) -> Option<usize> {
    if r.len() >= 5 && r[..5].eq_ignore_ascii_case(b"<?php") {
        // `<?php` must be followed by whitespace or the end of the file.
        return match r.get(5) {
            None => Some(5),
            Some(b) if b.is_ascii_whitespace() => Some(5),
            _ => None,
        };
    }
    if r.starts_with(b"<?=") {
        return Some(3);
    }
    // A bare `<?` is text: short_open_tag is off in PHP's defaults and Debian's.
    None
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokKind, String)> {
        tokenize(src.as_bytes())
            .unwrap()
            .into_iter()
            .filter(|t| !t.is_trivia())
            .map(|t| (t.kind, src[t.span].to_string()))
            .collect()
    }

    #[test]
    fn comments_and_strings_are_single_tokens() {
        let src = "<?php\n// $config['a'] = 'x';\n# also\n/* $config['a'] = 'y'; */\n$config['a'] = \"v\\\"q\";\n";
        let toks = kinds(src);
        assert_eq!(toks.len(), 7, "{toks:?}");
        assert_eq!(toks[0], (TokKind::Variable, "$config".into()));
        assert_eq!(toks[2], (TokKind::SingleQuoted, "'a'".into()));
        assert_eq!(
            toks[5],
            (
                TokKind::DoubleQuoted {
                    interpolated: false
                },
                "\"v\\\"q\"".into()
            )
        );
    }

    #[test]
    fn interpolation_is_detected() {
        let toks =
            kinds("<?php $a = \"http://$host/\"; $b = \"{$x}\"; $c = \"\\$notvar\"; $d = 'a$b';");
        let strs: Vec<_> = toks
            .iter()
            .filter(|(k, _)| !matches!(k, TokKind::Variable | TokKind::Punct))
            .collect();
        assert_eq!(strs[0].0, TokKind::DoubleQuoted { interpolated: true });
        assert_eq!(strs[1].0, TokKind::DoubleQuoted { interpolated: true });
        assert_eq!(
            strs[2].0,
            TokKind::DoubleQuoted {
                interpolated: false
            }
        );
        assert_eq!(strs[3].0, TokKind::SingleQuoted);
    }

    #[test]
    fn heredocs_and_inline_html() {
        let src = "\u{feff}<html><?php $a = <<<EOT\n$config['x'] = 'y';\n  EOT;\n?>\ntrailer $config['z'] = 'w';";
        let toks = tokenize(src.as_bytes()).unwrap();
        assert_eq!(toks[0].kind, TokKind::InlineHtml);
        let heredoc = toks
            .iter()
            .find(|t| t.kind == TokKind::OtherString)
            .unwrap();
        assert!(src[heredoc.span.clone()].ends_with("EOT"));
        assert_eq!(toks.last().unwrap().kind, TokKind::InlineHtml);
        assert_eq!(
            toks.iter().filter(|t| t.kind == TokKind::Variable).count(),
            1
        );
    }

    #[test]
    fn line_comment_ends_at_close_tag() {
        let toks = tokenize(b"<?php // c ?>x").unwrap();
        assert!(toks.iter().any(|t| t.kind == TokKind::CloseTag));
    }

    #[test]
    fn unterminated_things_are_errors() {
        assert!(tokenize(b"<?php $a = 'x;").is_err());
        assert!(tokenize(b"<?php /* x").is_err());
        assert!(tokenize(b"<?php $a = <<<E\nx\n").is_err());
    }
}
