//! Reading records from TOML (or JSON) text, with errors that name the file,
//! line, column and field, and say what is allowed.
//!
//! One TOML parser everywhere: the `toml` crate, TOML spec 1.1 (so inline
//! tables may span lines). The JSON Schemas in `schema/` say the same.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::record::{Gateway, Issue, Kind, Record, Sandbox, Service};
use crate::suggest::closest;
use crate::types::redact_credentials;

/// The TOML version every SDP component reads.
pub const TOML_VERSION: &str = "1.1";

/// One located problem in a spec document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    /// The file (or API body) the document came from.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Dotted path of the field, e.g. `services.eredar.host_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in a document (at least one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}

/// A record together with the text it was read from, so later checks (those
/// that need the catalog) can still point at a line.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: String,
    pub text: String,
    pub format: Format,
    pub record: Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Document {
    /// Turns a field issue into a located error for this document.
    pub fn locate(&self, issue: &Issue) -> SpecError {
        let (line, column) = match self.format {
            Format::Toml => locate_path(&self.text, &issue.path)
                .map(|span| line_col(&self.text, span.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c))),
            Format::Json => (None, None),
        };
        let mut message = issue.message.clone();
        if let (Format::Toml, Some(related)) = (self.format, &issue.related)
            && let Some(span) = locate_path(&self.text, related)
        {
            message.push_str(&format!(
                " (see line {})",
                line_col(&self.text, span.start).0
            ));
        }
        SpecError {
            file: self.file.clone(),
            line,
            column,
            field: (!issue.path.is_empty()).then(|| issue.path.join(".")),
            message,
        }
    }
}

/// Parses one TOML document into a record and runs the record's own checks.
pub fn parse_toml(text: &str, file: &str) -> Result<Document, SpecErrors> {
    toml_document(text, file).map_err(clean)
}

/// Parses a JSON body (as the API accepts) into a record.
pub fn parse_json(text: &str, file: &str) -> Result<Document, SpecErrors> {
    json_document(text, file).map_err(clean)
}

/// TOML, unless the text is a JSON object.
pub fn parse_any(text: &str, file: &str) -> Result<Document, SpecErrors> {
    if text.trim_start().starts_with('{') {
        parse_json(text, file)
    } else {
        parse_toml(text, file)
    }
}

/// Messages may echo input: never a credential, never a raw control character.
fn clean(mut errs: SpecErrors) -> SpecErrors {
    for e in &mut errs.0 {
        e.message = shown_message(&redact_credentials(&e.message));
        e.file = shown_message(&e.file);
        if let Some(f) = e.field.as_mut() {
            *f = shown_message(f);
        }
    }
    errs
}

fn shown_message(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

fn toml_document(text: &str, file: &str) -> Result<Document, SpecErrors> {
    let tree = DeTable::parse(text).map_err(|e| syntax_error(text, file, &e))?;
    let kind = read_kind(text, file, tree.get_ref())?;
    let record = match kind {
        Kind::Service => toml::from_str::<Service>(text).map(Record::Service),
        Kind::Gateway => toml::from_str::<Gateway>(text).map(Record::Gateway),
        Kind::Sandbox => toml::from_str::<Sandbox>(text).map(Record::Sandbox),
    }
    .map_err(|e| field_error(text, file, tree.get_ref(), &e))?;
    finish(Document {
        file: file.to_string(),
        text: text.to_string(),
        format: Format::Toml,
        record,
    })
}

fn json_document(text: &str, file: &str) -> Result<Document, SpecErrors> {
    #[derive(Deserialize)]
    struct KindOnly {
        kind: Option<serde_json::Value>,
    }
    let head: KindOnly = serde_json::from_str(text).map_err(|e| json_error(file, None, &e))?;
    let kind = match head.kind {
        None => return Err(missing_kind(file, None, None)),
        Some(serde_json::Value::String(k)) => Kind::ALL
            .into_iter()
            .find(|x| x.as_str() == k)
            .ok_or_else(|| unknown_kind(file, None, None, &k))?,
        Some(_) => {
            return Err(SpecError {
                file: file.into(),
                line: None,
                column: None,
                field: Some("kind".into()),
                message: format!("`kind` must be a string, one of: {}", Kind::names()),
            }
            .into());
        }
    };
    let record = match kind {
        Kind::Service => parse_json_as::<Service>(text).map(Record::Service),
        Kind::Gateway => parse_json_as::<Gateway>(text).map(Record::Gateway),
        Kind::Sandbox => parse_json_as::<Sandbox>(text).map(Record::Sandbox),
    }
    .map_err(|(path, e)| json_error(file, path, &e))?;
    finish(Document {
        file: file.to_string(),
        text: text.to_string(),
        format: Format::Json,
        record,
    })
}

fn json_error(file: &str, field: Option<String>, e: &serde_json::Error) -> SpecErrors {
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m);
    SpecErrors::from(SpecError {
        file: file.to_string(),
        line: Some(e.line()),
        column: Some(e.column()),
        field,
        message: reword(msg),
    })
}

/// Deserializes, keeping the path of the field that failed.
fn parse_json_as<T: DeserializeOwned>(
    text: &str,
) -> Result<T, (Option<String>, serde_json::Error)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ((path != ".").then_some(path), e.into_inner())
    })?;
    de.end().map_err(|e| (None, e))?;
    Ok(value)
}

fn finish(doc: Document) -> Result<Document, SpecErrors> {
    let issues = doc.record.check();
    if issues.is_empty() {
        Ok(doc)
    } else {
        Err(SpecErrors(issues.iter().map(|i| doc.locate(i)).collect()))
    }
}

fn read_kind(text: &str, file: &str, tree: &DeTable<'_>) -> Result<Kind, SpecErrors> {
    let Some((key, value)) = tree.iter().find(|(k, _)| k.get_ref() == "kind") else {
        return Err(missing_kind(file, Some(1), Some(1)));
    };
    let (line, col) = line_col(text, value.span().start);
    match value.get_ref() {
        DeValue::String(s) => match Kind::ALL.into_iter().find(|k| k.as_str() == s.as_ref()) {
            Some(k) => Ok(k),
            None => Err(unknown_kind(file, Some(line), Some(col), s)),
        },
        _ => {
            let (line, col) = line_col(text, key.span().start);
            Err(SpecError {
                file: file.into(),
                line: Some(line),
                column: Some(col),
                field: Some("kind".into()),
                message: format!("`kind` must be a string, one of: {}", Kind::names()),
            }
            .into())
        }
    }
}

fn missing_kind(file: &str, line: Option<usize>, column: Option<usize>) -> SpecErrors {
    SpecError {
        file: file.into(),
        line,
        column,
        field: Some("kind".into()),
        message: format!(
            "missing required key `kind`; every record starts with kind = \"...\", one of: {}",
            Kind::names()
        ),
    }
    .into()
}

fn unknown_kind(file: &str, line: Option<usize>, column: Option<usize>, k: &str) -> SpecErrors {
    let kinds = Kind::ALL.map(Kind::as_str);
    let hint = closest(k, &kinds)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    SpecError {
        file: file.into(),
        line,
        column,
        field: Some("kind".into()),
        message: format!("unknown kind `{k}`{hint}; allowed: {}", Kind::names()),
    }
    .into()
}

/// A TOML syntax error, with duplicate definitions named at both lines.
fn syntax_error(text: &str, file: &str, e: &toml::de::Error) -> SpecErrors {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = line_col(text, span.start);
    let mut message = e.message().trim().to_string();
    if message.starts_with("duplicate key")
        && let Some(better) = describe_duplicate(text, span.clone())
    {
        message = better;
    }
    SpecError {
        file: file.into(),
        line: Some(line),
        column: Some(column),
        field: None,
        message: format!("invalid TOML ({TOML_VERSION}): {message}"),
    }
    .into()
}

/// A problem found while reading the document into a record type.
fn field_error(text: &str, file: &str, tree: &DeTable<'_>, e: &toml::de::Error) -> SpecErrors {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = line_col(text, span.start);
    let raw = e.message().trim();
    let path = if raw.starts_with("missing field") {
        table_path_at(tree, span.start)
    } else {
        path_at(tree, span.start)
    };
    let field = path.join(".");
    let message = if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        let table = if field.is_empty() {
            "the document".to_string()
        } else {
            format!("[{field}]")
        };
        return SpecError {
            file: file.into(),
            line: Some(line),
            column: Some(column),
            field: Some(if field.is_empty() {
                key.to_string()
            } else {
                format!("{field}.{key}")
            }),
            message: format!("missing required key `{key}` in {table}"),
        }
        .into();
    } else {
        reword(raw)
    };
    SpecError {
        file: file.into(),
        line: Some(line),
        column: Some(column),
        field: (!field.is_empty()).then_some(field),
        message,
    }
    .into()
}

/// Rewrites serde's wording into the vocabulary of spec files ("key", not
/// "field"), adding a suggestion for a misspelt key.
fn reword(raw: &str) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed: Vec<&str> = tail
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .collect();
        let hint = closest(key, &allowed)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        if allowed.is_empty() {
            return format!("unknown key `{key}`: no keys are allowed here");
        }
        return format!(
            "unknown key `{key}`{hint}; allowed keys: {}",
            allowed.join(", ")
        );
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        return format!("missing required key `{key}`");
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {}, found {found}", plain_type(expected));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (v, tail) = rest.split_once('`').unwrap_or((rest, ""));
        return format!("`{v}` is not allowed here{tail}");
    }
    raw.to_string()
}

/// serde's names for types, in the words of a spec file.
fn plain_type(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer"
        }
        "a borrowed string" | "a string" => "a string",
        "a boolean" => "true or false",
        "a sequence" => "a list, e.g. [\"a\", \"b\"]",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

struct Entry {
    path: Vec<String>,
    key: Range<usize>,
    value: Range<usize>,
    is_table: bool,
}

/// Every key in the document with its path. Spans of implicit parent tables
/// (`[a.b]` creates `a`) do not cover their children, so lookups search the
/// flat list instead of descending.
fn entries(table: &DeTable<'_>, prefix: &[String], out: &mut Vec<Entry>) {
    for (k, v) in table.iter() {
        let mut path = prefix.to_vec();
        path.push(k.get_ref().to_string());
        let is_table = matches!(v.get_ref(), DeValue::Table(_));
        out.push(Entry {
            path: path.clone(),
            key: k.span(),
            value: v.span(),
            is_table,
        });
        if let DeValue::Table(t) = v.get_ref() {
            entries(t, &path, out);
        }
    }
}

/// Path of the key, or the narrowest value, that covers `offset`.
fn path_at(table: &DeTable<'_>, offset: usize) -> Vec<String> {
    let mut all = Vec::new();
    entries(table, &[], &mut all);
    if let Some(e) = all.iter().find(|e| e.key.contains(&offset)) {
        return e.path.clone();
    }
    // The narrowest value that covers it; an inline table counts (its span
    // covers its body), a `[table]` header's implicit span may not.
    all.iter()
        .filter(|e| e.value.contains(&offset) || e.value.start == offset)
        .min_by_key(|e| e.value.len())
        .map(|e| e.path.clone())
        .unwrap_or_default()
}

/// Path of the narrowest table whose header or body covers `offset`.
fn table_path_at(table: &DeTable<'_>, offset: usize) -> Vec<String> {
    let mut all = Vec::new();
    entries(table, &[], &mut all);
    all.iter()
        .filter(|e| e.is_table && (e.value.contains(&offset) || e.key.contains(&offset)))
        .max_by_key(|e| e.path.len())
        .map(|e| e.path.clone())
        .unwrap_or_default()
}

/// Span of the key at `path` (or of the array element, for a numeric segment).
pub fn locate_path(text: &str, path: &[String]) -> Option<Range<usize>> {
    let (tree, _) = DeTable::parse_recoverable(text);
    if path.is_empty() {
        return Some(0..0);
    }
    let mut table: &DeTable<'_> = tree.get_ref();
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    let mut span = None;
    for seg in path {
        if let Some(v) = value {
            match v.get_ref() {
                DeValue::Table(t) => table = t,
                DeValue::Array(a) => {
                    let idx: usize = seg.parse().ok()?;
                    let item = a.get(idx)?;
                    span = Some(item.span());
                    value = Some(item);
                    continue;
                }
                _ => return span,
            }
        }
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == seg)?;
        // Point at a scalar's value, like the parser's own errors do; at the
        // key for tables and arrays.
        span = Some(match v.get_ref() {
            DeValue::Table(_) | DeValue::Array(_) => k.span(),
            _ => v.span(),
        });
        value = Some(v);
    }
    span
}

/// For a "duplicate key" error, names where the first definition is.
fn describe_duplicate(text: &str, span: Range<usize>) -> Option<String> {
    let (dup_line, _) = line_col(text, span.start);
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(dup_line - 1)?;
    if let Some(header) = table_header(this) {
        let first = lines[..dup_line - 1]
            .iter()
            .position(|l| table_header(l).as_deref() == Some(header.as_str()))?;
        return Some(format!(
            "table [{header}] is defined twice: first at line {}, again at line {dup_line}; merge them into one [{header}] table",
            first + 1
        ));
    }
    let key = text.get(span)?.trim().trim_matches('"').to_string();
    // The duplicate is inside the last table header before it (or the root).
    let scope_start = lines[..dup_line - 1]
        .iter()
        .rposition(|l| table_header(l).is_some())
        .map_or(0, |i| i + 1);
    let first = (scope_start..dup_line - 1).find(|&i| defines_key(lines[i], &key))?;
    let scope = lines[..dup_line - 1]
        .iter()
        .rev()
        .find_map(|l| table_header(l))
        .map_or("the top level".to_string(), |h| format!("[{h}]"));
    Some(format!(
        "key `{key}` is defined twice in {scope}: first at line {}, again at line {dup_line}; keep one of them",
        first + 1
    ))
}

/// The normalized name of a `[table]` header line (not `[[array]]`).
fn table_header(line: &str) -> Option<String> {
    let t = line.trim_start();
    if !t.starts_with('[') || t.starts_with("[[") {
        return None;
    }
    let end = t.find(']')?;
    let inner = &t[1..end];
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\''))
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn defines_key(line: &str, key: &str) -> bool {
    let t = line.trim_start();
    let Some(rest) = t
        .strip_prefix(key)
        .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
    else {
        return false;
    };
    let rest = rest.trim_start();
    rest.starts_with('=') || rest.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "ab\nçd\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 5), (2, 2));
    }

    #[test]
    fn table_headers_are_normalized() {
        assert_eq!(
            table_header("[ services . eredar ]").as_deref(),
            Some("services.eredar")
        );
        assert_eq!(table_header("[\"services\"]").as_deref(), Some("services"));
        assert_eq!(table_header("[[x]]"), None);
        assert_eq!(table_header("a = 1"), None);
    }
}
