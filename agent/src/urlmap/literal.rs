//! PHP string literals: the value PHP reads from a literal's body, and the
//! body to write for a value, escaped only where PHP needs it (so a value
//! read from a literal and written back gives the same bytes whenever it can).

use super::reader::Quote;

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
/// `value` back (a `$` in double quotes never becomes interpolation), and
/// otherwise left as it is.
pub fn encode(value: &str, quote: Quote) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut s = String::with_capacity(value.len() + 2);
    match quote {
        Quote::Single => {
            s.push('\'');
            for (i, &c) in chars.iter().enumerate() {
                match c {
                    '\'' => s.push_str("\\'"),
                    // A backslash is literal unless it would escape the next
                    // character (or the closing quote).
                    '\\' if matches!(chars.get(i + 1), None | Some('\\') | Some('\'')) => {
                        s.push_str("\\\\")
                    }
                    c => s.push(c),
                }
            }
            s.push('\'');
        }
        Quote::Double => {
            s.push('"');
            for (i, &c) in chars.iter().enumerate() {
                let next = chars.get(i + 1).copied();
                let prev = i.checked_sub(1).map(|p| chars[p]);
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' if next.is_none_or(|n| "ntrvef\\$\"01234567xu".contains(n)) => {
                        s.push_str("\\\\")
                    }
                    '$' if prev == Some('{')
                        || next.is_some_and(|n| {
                            n == '{' || n == '_' || n.is_alphabetic() || (n as u32) >= 0x80
                        }) =>
                    {
                        s.push_str("\\$")
                    }
                    c => s.push(c),
                }
            }
            s.push('"');
        }
    }
    s
}
