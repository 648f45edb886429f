//! A small TOML subset parser for the configuration file, so that Hearth needs neither the
//! `toml` crate nor serde (together about 165 KB in a router's flash).
//!
//! Owns: turning text into a [`Table`] of [`Value`]s with line numbers. Leaves the meaning of
//! keys to `config`.
//!
//! Supported (TOML 1.0 unless noted): `#` comments; bare, quoted and dotted keys; `[table]`
//! and `[[array.of.tables]]` headers; basic strings with the escapes `\b \t \n \f \r \" \\
//! \uXXXX \UXXXXXXXX`; literal strings `'...'`; decimal integers with `_` separators; `true`
//! and `false`; arrays (multi-line, trailing comma, comments inside); inline tables, which
//! may also span lines and end with a comma (as TOML 1.1 allows).
//!
//! Not supported, each a clear "line N: unsupported TOML: ..." error: floats, dates and
//! times, multi-line strings, and hexadecimal, octal and binary integers. Nothing the
//! configuration needs is lost.

use std::fmt;

/// Nesting of arrays and inline tables deeper than this is refused (bounds the recursion).
const MAX_NESTING: usize = 32;

/// A TOML value of the supported subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    String(String),
    Integer(i64),
    Boolean(bool),
    Array(Vec<Value>),
    Table(Table),
}

impl Value {
    /// The TOML name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Boolean(_) => "boolean",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// How a table came to exist; decides whether it may be extended later (TOML 1.0 §Table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Created as the parent of a `[a.b]` header; `[a]` may still define it.
    Implicit,
    /// Defined by a `[header]` or as an element of `[[header]]`.
    Header,
    /// Created by a dotted key `a.b = 1`; more dotted keys may extend it, headers may not.
    Dotted,
    /// `{ ... }`: complete as written.
    Inline,
}

/// A table: keys in document order, each with the line it was defined on.
#[derive(Clone, Debug)]
pub struct Table {
    entries: Vec<Entry>,
    origin: Origin,
}

/// Tables compare by content only: how they were written does not change what they mean.
impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}
impl Eq for Table {}

/// One key of a table.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    /// 1-based line of the key (for a table made by a header: the header's line).
    pub line: u32,
    /// Made by `[[header]]`, so later `[[header]]`s may append to it (a written array may not).
    array_of_tables: bool,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.value == other.value && self.line == other.line
    }
}
impl Eq for Entry {}

impl Table {
    fn new(origin: Origin) -> Table {
        Table {
            entries: Vec::new(),
            origin,
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entry(key).map(|e| &e.value)
    }

    /// The entry of `key` (value and line), if present.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// All entries in document order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }
}

/// A syntax error, or a construct outside the subset, at a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TomlError {
    pub line: u32,
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TomlError {}

/// Parses a whole document into its root table.
pub fn parse(src: &str) -> Result<Table, TomlError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut p = Parser {
        src,
        pos: 0,
        line: 1,
    };
    let mut root = Table::new(Origin::Header);
    // Where `key = value` lines go: the path of the last header, and whether it was `[[..]]`.
    let mut current: Vec<String> = Vec::new();
    // Each iteration consumes at least one character or returns, so this ends.
    loop {
        p.skip_ws();
        match p.peek() {
            None => break,
            Some('\n') | Some('\r') => p.newline()?,
            Some('#') => p.skip_comment()?,
            Some('[') => {
                let line = p.line;
                p.bump();
                let array = p.eat('[');
                p.skip_ws();
                let path = p.key_path()?;
                p.skip_ws();
                if !p.eat(']') || (array && !p.eat(']')) {
                    return Err(p.err(if array {
                        "expected `]]` to close the header"
                    } else {
                        "expected `]` to close the header"
                    }));
                }
                p.end_of_line()?;
                open_header(&mut root, &path, array, line)?;
                current = path;
            }
            Some(_) => {
                let line = p.line;
                let path = p.key_path()?;
                p.skip_ws();
                if !p.eat('=') {
                    return Err(p.err("expected `=` after the key"));
                }
                p.skip_ws();
                let value = p.value(0)?;
                p.end_of_line()?;
                let table = table_at(&mut root, &current, line)?;
                insert_dotted(table, &path, value, line)?;
            }
        }
    }
    Ok(root)
}

fn error(line: u32, message: impl Into<String>) -> TomlError {
    TomlError {
        line,
        message: message.into(),
    }
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// The table a header path names, for `key = value` lines after it (an array of tables
/// means its last element).
fn table_at<'t>(
    root: &'t mut Table,
    path: &[String],
    line: u32,
) -> Result<&'t mut Table, TomlError> {
    let mut table = root;
    for key in path {
        table = match table.get_mut(key).map(|e| &mut e.value) {
            Some(Value::Table(t)) => t,
            Some(Value::Array(items)) => match items.last_mut() {
                Some(Value::Table(t)) => t,
                _ => return Err(error(line, format!("`{key}` is not a table"))),
            },
            _ => return Err(error(line, format!("`{key}` is not a table"))),
        };
    }
    Ok(table)
}

/// Walks to (creating as needed) the parent tables of a header; intermediate keys may be any
/// table but an inline one, or an array of tables (its last element).
fn header_parent<'t>(
    root: &'t mut Table,
    path: &[String],
    line: u32,
) -> Result<&'t mut Table, TomlError> {
    let mut table = root;
    for (i, key) in path.iter().enumerate() {
        if table.get(key).is_none() {
            table.entries.push(Entry {
                key: key.clone(),
                value: Value::Table(Table::new(Origin::Implicit)),
                line,
                array_of_tables: false,
            });
        }
        let here = dotted(&path[..=i]);
        // The entry exists: it was either there or pushed just above.
        let Some(entry) = table.get_mut(key) else {
            return Err(error(line, format!("`{here}` vanished")));
        };
        let aot = entry.array_of_tables;
        table = match &mut entry.value {
            Value::Table(t) if t.origin != Origin::Inline => t,
            Value::Array(items) if aot => match items.last_mut() {
                Some(Value::Table(t)) => t,
                _ => return Err(error(line, format!("`{here}` is not a table"))),
            },
            _ => {
                return Err(error(
                    line,
                    format!("`{here}` is already defined and cannot be extended"),
                ));
            }
        };
    }
    Ok(table)
}

fn open_header(root: &mut Table, path: &[String], array: bool, line: u32) -> Result<(), TomlError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(error(line, "empty header"));
    };
    let parent = header_parent(root, parents, line)?;
    let name = dotted(path);
    match parent.get_mut(last) {
        None => parent.entries.push(Entry {
            key: last.clone(),
            value: if array {
                Value::Array(vec![Value::Table(Table::new(Origin::Header))])
            } else {
                Value::Table(Table::new(Origin::Header))
            },
            line,
            array_of_tables: array,
        }),
        Some(entry) => match (&mut entry.value, array) {
            (Value::Array(items), true) if entry.array_of_tables => {
                items.push(Value::Table(Table::new(Origin::Header)));
            }
            (Value::Table(t), false) if t.origin == Origin::Implicit => {
                t.origin = Origin::Header;
                entry.line = line;
            }
            _ => {
                return Err(error(
                    line,
                    format!("`{name}` is defined twice (first on line {})", entry.line),
                ));
            }
        },
    }
    Ok(())
}

/// Inserts `a.b.c = value` into `table`, creating dotted tables `a` and `a.b` as needed.
fn insert_dotted(
    table: &mut Table,
    path: &[String],
    value: Value,
    line: u32,
) -> Result<(), TomlError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(error(line, "empty key"));
    };
    let mut table = table;
    for (i, key) in parents.iter().enumerate() {
        if table.get(key).is_none() {
            table.entries.push(Entry {
                key: key.clone(),
                value: Value::Table(Table::new(Origin::Dotted)),
                line,
                array_of_tables: false,
            });
        }
        let here = dotted(&path[..=i]);
        table = match table.get_mut(key).map(|e| &mut e.value) {
            Some(Value::Table(t)) if t.origin == Origin::Dotted => t,
            _ => {
                return Err(error(
                    line,
                    format!("`{here}` is already defined and cannot be extended by a dotted key"),
                ));
            }
        };
    }
    if let Some(existing) = table.entry(last) {
        return Err(error(
            line,
            format!(
                "duplicate key `{}` (first on line {})",
                dotted(path),
                existing.line
            ),
        ));
    }
    table.entries.push(Entry {
        key: last.clone(),
        value,
        line,
        array_of_tables: false,
    });
    Ok(())
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn err(&self, message: impl Into<String>) -> TomlError {
        error(self.line, message)
    }

    fn unsupported(&self, what: &str) -> TomlError {
        self.err(format!("unsupported TOML: {what}"))
    }

    /// Spaces and tabs (TOML whitespace).
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ') | Some('\t')) {
            self.bump();
        }
    }

    /// `#` up to (not including) the end of the line; control characters are not allowed.
    fn skip_comment(&mut self) -> Result<(), TomlError> {
        while let Some(c) = self.peek() {
            if c == '\n' || c == '\r' {
                break;
            }
            if c.is_control() && c != '\t' {
                return Err(self.err("control character in a comment"));
            }
            self.bump();
        }
        Ok(())
    }

    /// `\n` or `\r\n`.
    fn newline(&mut self) -> Result<(), TomlError> {
        if self.eat('\r') && self.peek() != Some('\n') {
            return Err(self.err("carriage return not followed by a newline"));
        }
        self.eat('\n');
        Ok(())
    }

    /// After a header or key/value: only whitespace and a comment until the newline.
    fn end_of_line(&mut self) -> Result<(), TomlError> {
        self.skip_ws();
        if self.peek() == Some('#') {
            self.skip_comment()?;
        }
        match self.peek() {
            None => Ok(()),
            Some('\n') | Some('\r') => self.newline(),
            Some(c) => Err(self.err(format!(
                "unexpected `{c}` after the value; expected a newline"
            ))),
        }
    }

    /// Whitespace, newlines and comments (inside arrays and inline tables).
    fn skip_blank(&mut self) -> Result<(), TomlError> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some('\n') | Some('\r') => self.newline()?,
                Some('#') => self.skip_comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// `key` or `a."b".c`.
    fn key_path(&mut self) -> Result<Vec<String>, TomlError> {
        let mut path = vec![self.simple_key()?];
        loop {
            self.skip_ws();
            if !self.eat('.') {
                return Ok(path);
            }
            self.skip_ws();
            path.push(self.simple_key()?);
        }
    }

    fn simple_key(&mut self) -> Result<String, TomlError> {
        match self.peek() {
            Some('"') => {
                if self.src[self.pos..].starts_with("\"\"\"") {
                    return Err(self.unsupported("multi-line string as a key"));
                }
                self.basic_string()
            }
            Some('\'') => {
                if self.src[self.pos..].starts_with("'''") {
                    return Err(self.unsupported("multi-line string as a key"));
                }
                self.literal_string()
            }
            _ => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    self.bump();
                }
                if self.pos == start {
                    return Err(match self.peek() {
                        Some(c) => self.err(format!("expected a key, found `{c}`")),
                        None => self.err("expected a key, found the end of the file"),
                    });
                }
                Ok(self.src[start..self.pos].to_owned())
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, TomlError> {
        if depth > MAX_NESTING {
            return Err(self.err(format!("nesting deeper than {MAX_NESTING}")));
        }
        match self.peek() {
            Some('"') => {
                if self.src[self.pos..].starts_with("\"\"\"") {
                    return Err(self.unsupported("multi-line strings (\"\"\")"));
                }
                self.basic_string().map(Value::String)
            }
            Some('\'') => {
                if self.src[self.pos..].starts_with("'''") {
                    return Err(self.unsupported("multi-line strings (''')"));
                }
                self.literal_string().map(Value::String)
            }
            Some('[') => self.array(depth),
            Some('{') => self.inline_table(depth),
            Some(c) if c.is_ascii_digit() || c == '+' || c == '-' => self.integer(),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.word().to_owned();
                match word.as_str() {
                    "true" => Ok(Value::Boolean(true)),
                    "false" => Ok(Value::Boolean(false)),
                    "inf" | "nan" => Err(self.unsupported("floats")),
                    _ => Err(self.err(format!(
                        "expected a value, found `{word}` (strings need quotes)"
                    ))),
                }
            }
            Some('\n') | Some('\r') | None | Some('#') => Err(self.err("missing value after `=`")),
            Some(c) => Err(self.err(format!("expected a value, found `{c}`"))),
        }
    }

    /// A run of characters that may belong to a bare word, number, date or float.
    fn word(&mut self) -> &str {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || "_+-.:".contains(c)) {
            self.bump();
        }
        &self.src[start..self.pos]
    }

    fn integer(&mut self) -> Result<Value, TomlError> {
        let word = self.word().to_owned();
        let (negative, digits) = match word.as_bytes().first() {
            Some(b'-') => (true, &word[1..]),
            Some(b'+') => (false, &word[1..]),
            _ => (false, &word[..]),
        };
        if digits.starts_with("0x") || digits.starts_with("0o") || digits.starts_with("0b") {
            return Err(self.unsupported(&format!(
                "hexadecimal, octal and binary integers (`{word}`)"
            )));
        }
        if digits == "inf" || digits == "nan" {
            return Err(self.unsupported(&format!("floats (`{word}`)")));
        }
        // A date starts `YYYY-`; a time contains `:`.
        if digits.contains(':') || digits.as_bytes().get(4) == Some(&b'-') {
            return Err(self.unsupported(&format!("dates and times (`{word}`)")));
        }
        if digits.contains(['.', 'e', 'E']) {
            return Err(self.unsupported(&format!("floats (`{word}`)")));
        }
        let valid = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
            && !digits.starts_with('_')
            && !digits.ends_with('_')
            && !digits.contains("__");
        if !valid {
            return Err(self.err(format!("invalid integer `{word}`")));
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(self.err(format!("invalid integer `{word}`: leading zero")));
        }
        let mut n: i64 = 0;
        for b in digits.bytes().filter(|b| *b != b'_') {
            let d = i64::from(b - b'0');
            // Accumulate negatively so i64::MIN fits.
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if negative {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or_else(|| self.err(format!("integer `{word}` is out of range")))?;
        }
        Ok(Value::Integer(n))
    }

    fn basic_string(&mut self) -> Result<String, TomlError> {
        self.bump(); // the opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(self.err("unterminated string"));
            };
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                '\n' | '\r' => {
                    return Err(error(
                        self.line.saturating_sub(u32::from(c == '\n')),
                        "unterminated string",
                    ));
                }
                c if c.is_control() && c != '\t' => {
                    return Err(self.err("control character in a string (use an escape)"));
                }
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, TomlError> {
        let c = self.bump();
        Ok(match c {
            Some('b') => '\u{8}',
            Some('t') => '\t',
            Some('n') => '\n',
            Some('f') => '\u{c}',
            Some('r') => '\r',
            Some('"') => '"',
            Some('\\') => '\\',
            Some('u') => self.unicode_escape(4)?,
            Some('U') => self.unicode_escape(8)?,
            Some(c) if c != '\n' => return Err(self.err(format!("invalid escape `\\{c}`"))),
            _ => return Err(self.err("unterminated string")),
        })
    }

    fn unicode_escape(&mut self, len: usize) -> Result<char, TomlError> {
        let hex = self.src.get(self.pos..self.pos + len).unwrap_or("");
        let code = if hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            u32::from_str_radix(hex, 16).ok()
        } else {
            None
        };
        let Some(code) = code else {
            return Err(self.err(format!("invalid escape: expected {len} hex digits")));
        };
        self.pos += len; // ASCII hex digits, no newline among them
        char::from_u32(code).ok_or_else(|| {
            self.err(format!(
                "invalid escape: U+{code:X} is not a Unicode scalar value"
            ))
        })
    }

    fn literal_string(&mut self) -> Result<String, TomlError> {
        self.bump(); // the opening quote
        let start = self.pos;
        loop {
            match self.peek() {
                Some('\'') => {
                    let s = self.src[start..self.pos].to_owned();
                    self.bump();
                    return Ok(s);
                }
                None | Some('\n') | Some('\r') => return Err(self.err("unterminated string")),
                Some(c) if c.is_control() && c != '\t' => {
                    return Err(self.err("control character in a string"));
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, TomlError> {
        let open_line = self.line;
        self.bump(); // '['
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.eat(']') {
                return Ok(Value::Array(items));
            }
            if self.peek().is_none() {
                return Err(error(open_line, "unterminated array"));
            }
            items.push(self.value(depth + 1)?);
            self.skip_blank()?;
            if self.eat(']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(',') {
                return match self.peek() {
                    None => Err(error(open_line, "unterminated array")),
                    Some(c) => {
                        Err(self.err(format!("expected `,` or `]` in an array, found `{c}`")))
                    }
                };
            }
        }
    }

    fn inline_table(&mut self, depth: usize) -> Result<Value, TomlError> {
        let open_line = self.line;
        self.bump(); // '{'
        let mut table = Table::new(Origin::Inline);
        loop {
            self.skip_blank()?;
            if self.eat('}') {
                break;
            }
            if self.peek().is_none() {
                return Err(error(open_line, "unterminated inline table"));
            }
            let line = self.line;
            let path = self.key_path()?;
            self.skip_ws();
            if !self.eat('=') {
                return Err(self.err("expected `=` after the key"));
            }
            self.skip_ws();
            let value = self.value(depth + 1)?;
            insert_dotted(&mut table, &path, value, line)?;
            self.skip_blank()?;
            if self.eat('}') {
                break;
            }
            if !self.eat(',') {
                return match self.peek() {
                    None => Err(error(open_line, "unterminated inline table")),
                    Some(c) => Err(self.err(format!(
                        "expected `,` or `}}` in an inline table, found `{c}`"
                    ))),
                };
            }
        }
        freeze(&mut table);
        Ok(Value::Table(table))
    }
}

/// An inline table and the dotted tables inside it are complete as written.
fn freeze(table: &mut Table) {
    table.origin = Origin::Inline;
    for e in &mut table.entries {
        if let Value::Table(t) = &mut e.value {
            if t.origin == Origin::Dotted {
                freeze(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Table {
        match parse(src) {
            Ok(t) => t,
            Err(e) => panic!("{src:?}: {e}"),
        }
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(t) => panic!("{src:?} parsed: {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn sub<'t>(t: &'t Table, key: &str) -> &'t Table {
        match t.get(key) {
            Some(Value::Table(t)) => t,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn document_comments_and_blank_lines_ignored() {
        let t = ok("# top\n\n  a = 1 # trailing\n\t\n# end");
        assert_eq!(t.get("a"), Some(&Value::Integer(1)));
        assert_eq!(t.entries().len(), 1);
    }

    #[test]
    fn document_crlf_line_endings_accepted() {
        let t = ok("a = 1\r\n[t]\r\nb = 'x'\r\n");
        assert_eq!(sub(&t, "t").get("b"), Some(&s("x")));
    }

    #[test]
    fn document_lone_carriage_return_rejected() {
        assert_eq!(
            err("a = 1\rb = 2"),
            "line 1: carriage return not followed by a newline"
        );
    }

    #[test]
    fn key_bare_quoted_and_literal_accepted() {
        let t = ok("bare-key_1 = 1\n\"quoted key\" = 2\n'lit.key' = 3\n\"\" = 4");
        assert_eq!(t.get("bare-key_1"), Some(&Value::Integer(1)));
        assert_eq!(t.get("quoted key"), Some(&Value::Integer(2)));
        assert_eq!(t.get("lit.key"), Some(&Value::Integer(3)));
        assert_eq!(t.get(""), Some(&Value::Integer(4)));
    }

    #[test]
    fn key_dotted_creates_tables() {
        let t = ok("a.b.c = 1\na . \"d\" = 2");
        let a = sub(&t, "a");
        assert_eq!(sub(a, "b").get("c"), Some(&Value::Integer(1)));
        assert_eq!(a.get("d"), Some(&Value::Integer(2)));
    }

    #[test]
    fn key_duplicate_rejected_with_both_lines() {
        assert_eq!(
            err("a = 1\n\na = 2"),
            "line 3: duplicate key `a` (first on line 1)"
        );
        assert_eq!(
            err("[t]\nx.y = 1\nx.y = 2"),
            "line 3: duplicate key `x.y` (first on line 2)"
        );
    }

    #[test]
    fn key_missing_equals_rejected() {
        assert_eq!(err("a 1"), "line 1: expected `=` after the key");
        assert_eq!(err("a ="), "line 1: missing value after `=`");
        assert_eq!(err("= 1"), "line 1: expected a key, found `=`");
    }

    #[test]
    fn key_dotted_into_value_rejected() {
        assert_eq!(
            err("a = 1\na.b = 2"),
            "line 2: `a` is already defined and cannot be extended by a dotted key"
        );
    }

    #[test]
    fn header_table_collects_keys() {
        let t = ok("x = 0\n[c2s]\nlisten = [\"a\"]\n[limits]\nmax = 5\n");
        assert_eq!(t.get("x"), Some(&Value::Integer(0)));
        assert_eq!(
            sub(&t, "c2s").get("listen"),
            Some(&Value::Array(vec![s("a")]))
        );
        assert_eq!(sub(&t, "limits").get("max"), Some(&Value::Integer(5)));
        assert_eq!(t.entry("limits").map(|e| e.line), Some(4));
    }

    #[test]
    fn header_dotted_and_implicit_parent_accepted() {
        let t = ok("[a.b]\nx = 1\n[a]\ny = 2\n[ a . 'c' ]\nz = 3");
        let a = sub(&t, "a");
        assert_eq!(sub(a, "b").get("x"), Some(&Value::Integer(1)));
        assert_eq!(a.get("y"), Some(&Value::Integer(2)));
        assert_eq!(sub(a, "c").get("z"), Some(&Value::Integer(3)));
    }

    #[test]
    fn header_twice_rejected() {
        assert_eq!(
            err("[a]\n[b]\n[a]"),
            "line 3: `a` is defined twice (first on line 1)"
        );
        assert_eq!(
            err("[a]\nb.c = 1\n[a.b]"),
            "line 3: `a.b` is defined twice (first on line 2)"
        );
        assert_eq!(
            err("a = 1\n[a]"),
            "line 2: `a` is defined twice (first on line 1)"
        );
    }

    #[test]
    fn header_into_inline_table_rejected() {
        assert_eq!(
            err("a = { b = 1 }\n[a.c]"),
            "line 2: `a` is already defined and cannot be extended"
        );
    }

    #[test]
    fn header_unclosed_or_trailing_garbage_rejected() {
        assert_eq!(err("[a"), "line 1: expected `]` to close the header");
        assert_eq!(err("[[a]"), "line 1: expected `]]` to close the header");
        assert_eq!(
            err("[a] b"),
            "line 1: unexpected `b` after the value; expected a newline"
        );
    }

    #[test]
    fn header_array_of_tables_appends() {
        let t = ok("[[t.c]]\nd = 'a'\n[[t.c]]\nd = 'b'\n[t.c.sub]\ne = 1\n");
        let Some(Value::Array(items)) = sub(&t, "t").get("c") else {
            panic!("{t:?}")
        };
        assert_eq!(items.len(), 2);
        let Value::Table(second) = &items[1] else {
            panic!()
        };
        assert_eq!(second.get("d"), Some(&s("b")));
        assert_eq!(sub(second, "sub").get("e"), Some(&Value::Integer(1)));
    }

    #[test]
    fn header_array_of_tables_onto_static_array_rejected() {
        assert_eq!(
            err("a = []\n[[a]]"),
            "line 2: `a` is defined twice (first on line 1)"
        );
    }

    #[test]
    fn string_basic_escapes_decoded() {
        let t = ok(r#"a = "q\" b\\ n\n t\t u\u00E9 U\U0001F600 \b\f\r""#);
        assert_eq!(
            t.get("a"),
            Some(&s("q\" b\\ n\n t\t u\u{e9} U\u{1f600} \u{8}\u{c}\r"))
        );
    }

    #[test]
    fn string_literal_keeps_backslashes() {
        let t = ok(r"a = 'C:\path\n'");
        assert_eq!(t.get("a"), Some(&s(r"C:\path\n")));
    }

    #[test]
    fn string_bad_escape_rejected() {
        assert_eq!(err(r#"a = "\x""#), "line 1: invalid escape `\\x`");
        assert_eq!(
            err(r#"a = "\u12""#),
            "line 1: invalid escape: expected 4 hex digits"
        );
        assert_eq!(
            err(r#"a = "\uD800""#),
            "line 1: invalid escape: U+D800 is not a Unicode scalar value"
        );
    }

    #[test]
    fn string_unterminated_rejected_on_its_line() {
        assert_eq!(
            err("a = 1\nb = \"abc\nc = 2"),
            "line 2: unterminated string"
        );
        assert_eq!(err("b = 'abc"), "line 1: unterminated string");
    }

    #[test]
    fn string_multiline_unsupported() {
        assert_eq!(
            err("a = \"\"\"x\"\"\""),
            "line 1: unsupported TOML: multi-line strings (\"\"\")"
        );
        assert_eq!(
            err("\n\na = '''x'''"),
            "line 3: unsupported TOML: multi-line strings (''')"
        );
    }

    #[test]
    fn integer_forms_accepted() {
        let t = ok(
            "a = 0\nb = -17\nc = +5\nd = 1_000_000\ne = 9223372036854775807\nf = -9223372036854775808",
        );
        assert_eq!(t.get("a"), Some(&Value::Integer(0)));
        assert_eq!(t.get("b"), Some(&Value::Integer(-17)));
        assert_eq!(t.get("c"), Some(&Value::Integer(5)));
        assert_eq!(t.get("d"), Some(&Value::Integer(1_000_000)));
        assert_eq!(t.get("e"), Some(&Value::Integer(i64::MAX)));
        assert_eq!(t.get("f"), Some(&Value::Integer(i64::MIN)));
    }

    #[test]
    fn integer_malformed_rejected() {
        assert_eq!(err("a = 1__0"), "line 1: invalid integer `1__0`");
        assert_eq!(err("a = _1"), "line 1: expected a value, found `_`");
        assert_eq!(err("a = 1_"), "line 1: invalid integer `1_`");
        assert_eq!(
            err("a = 012"),
            "line 1: invalid integer `012`: leading zero"
        );
        assert_eq!(err("a = 12abc"), "line 1: invalid integer `12abc`");
        assert_eq!(
            err("a = 9223372036854775808"),
            "line 1: integer `9223372036854775808` is out of range"
        );
    }

    #[test]
    fn integer_lookalikes_unsupported() {
        assert_eq!(err("a = 1.5"), "line 1: unsupported TOML: floats (`1.5`)");
        assert_eq!(err("a = 1e3"), "line 1: unsupported TOML: floats (`1e3`)");
        assert_eq!(err("a = inf"), "line 1: unsupported TOML: floats");
        assert_eq!(err("a = -nan"), "line 1: unsupported TOML: floats (`-nan`)");
        assert_eq!(
            err("a = 0xff"),
            "line 1: unsupported TOML: hexadecimal, octal and binary integers (`0xff`)"
        );
        assert_eq!(
            err("a = 1979-05-27"),
            "line 1: unsupported TOML: dates and times (`1979-05-27`)"
        );
        assert_eq!(
            err("a = 07:32:00"),
            "line 1: unsupported TOML: dates and times (`07:32:00`)"
        );
    }

    #[test]
    fn boolean_accepted_and_bare_word_rejected() {
        let t = ok("a = true\nb = false");
        assert_eq!(t.get("a"), Some(&Value::Boolean(true)));
        assert_eq!(t.get("b"), Some(&Value::Boolean(false)));
        assert_eq!(
            err("a = yes"),
            "line 1: expected a value, found `yes` (strings need quotes)"
        );
    }

    #[test]
    fn array_multiline_trailing_comma_and_comments_accepted() {
        let t = ok("a = [\n  1, # one\n  2,\n\n  # nothing\n]\nb = []\nc = [[1], ['x', \"y\"]]");
        assert_eq!(
            t.get("a"),
            Some(&Value::Array(vec![Value::Integer(1), Value::Integer(2)]))
        );
        assert_eq!(t.get("b"), Some(&Value::Array(vec![])));
        assert_eq!(
            t.get("c"),
            Some(&Value::Array(vec![
                Value::Array(vec![Value::Integer(1)]),
                Value::Array(vec![s("x"), s("y")])
            ]))
        );
    }

    #[test]
    fn array_malformed_rejected() {
        assert_eq!(
            err("a = [1 2]"),
            "line 1: expected `,` or `]` in an array, found `2`"
        );
        assert_eq!(err("a = [1,,2]"), "line 1: expected a value, found `,`");
        assert_eq!(err("a = [\n1,\n2"), "line 1: unterminated array");
    }

    #[test]
    fn array_nesting_bounded() {
        let deep = format!("a = {}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(err(&deep), "line 1: nesting deeper than 32");
    }

    #[test]
    fn inline_table_accepted_and_lines_recorded() {
        let t = ok("t = { a = 1, 'b' = \"x\", c.d = true }\n\nu = {\n  k = 1,\n}\ne = {}");
        let inline = sub(&t, "t");
        assert_eq!(inline.get("a"), Some(&Value::Integer(1)));
        assert_eq!(inline.get("b"), Some(&s("x")));
        assert_eq!(sub(inline, "c").get("d"), Some(&Value::Boolean(true)));
        assert_eq!(sub(&t, "u").entry("k").map(|e| e.line), Some(4));
        assert!(sub(&t, "e").is_empty());
    }

    #[test]
    fn inline_table_is_closed_to_later_keys() {
        assert_eq!(
            err("t = { a = 1 }\nt.b = 2"),
            "line 2: `t` is already defined and cannot be extended by a dotted key"
        );
        assert_eq!(
            err("t = { a = 1, a = 2 }"),
            "line 1: duplicate key `a` (first on line 1)"
        );
        assert_eq!(
            err("t = { a = 1 b = 2 }"),
            "line 1: expected `,` or `}` in an inline table, found `b`"
        );
        assert_eq!(err("t = { a = 1"), "line 1: unterminated inline table");
    }

    #[test]
    fn document_value_followed_by_junk_rejected() {
        assert_eq!(
            err("a = 1 2"),
            "line 1: unexpected `2` after the value; expected a newline"
        );
        assert_eq!(
            err("a = \"x\" \"y\""),
            "line 1: unexpected `\"` after the value; expected a newline"
        );
    }

    #[test]
    fn document_control_character_in_comment_rejected() {
        assert_eq!(err("# a\u{7f}"), "line 1: control character in a comment");
    }

    #[test]
    fn document_bom_skipped() {
        assert_eq!(ok("\u{feff}a = 1").get("a"), Some(&Value::Integer(1)));
    }
}
