//! A generic YAML node tree where every node knows its byte span, so that
//! later checks (unknown keys, bad values, unknown names) can point at the
//! exact key or value. serde-saphyr does the parsing (anchors, merges, flow
//! and block styles, scalar typing); we only keep what we need.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::diag::{Diagnostic, Severity, SourceFile};

/// A YAML node with its position in the source.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    /// Byte offset into the source text.
    pub offset: usize,
    /// Byte length (zero for collections: they point at their start).
    pub len: usize,
    /// Line and column as reported by the parser, used when the parser could
    /// not give a byte offset.
    line: u64,
    col: u64,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Null,
    Bool(bool),
    /// Integers are kept apart from floats so that YAML `1200` becomes JSON
    /// `1200`, not `1200.0`, when a test case body is serialized.
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// "a string", "a list", ... for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing (null)",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self.kind {
            // Precision loss above 2^53 is irrelevant for policy numbers.
            #[allow(clippy::cast_precision_loss)]
            Kind::Int(i) => Some(i as f64),
            Kind::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under the string key `key`, for mappings.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node for `key`, to point diagnostics at the key itself.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    /// The scalar's text as a YAML author would read it (for keys that happen
    /// to be numbers and for messages).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// Compact JSON text (for test-case bodies written as YAML). Written by
    /// hand so that mapping keys keep their YAML order: `serde_json::Map`
    /// sorts them unless a crate-wide feature is switched on.
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => out.push_str("null"),
            Kind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Kind::Int(i) => out.push_str(&i.to_string()),
            Kind::Float(f) => out.push_str(
                &serde_json::Number::from_f64(*f)
                    .map_or_else(|| "null".to_owned(), |n| n.to_string()),
            ),
            Kind::Str(s) => out.push_str(&Value::String(s.clone()).to_string()),
            Kind::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Kind::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let key = k.scalar_text().unwrap_or_default();
                    out.push_str(&Value::String(key).to_string());
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Fixes up byte offsets the parser could not give (it always can for
    /// string input, but be robust).
    fn resolve_offsets(&mut self, file: &SourceFile) {
        if self.offset == usize::MAX {
            self.offset = file.offset_of(to_usize(self.line), to_usize(self.col));
            self.len = 0;
        }
        match &mut self.kind {
            Kind::Seq(items) => items.iter_mut().for_each(|n| n.resolve_offsets(file)),
            Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.resolve_offsets(file);
                v.resolve_offsets(file);
            }),
            _ => {}
        }
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Kind>::deserialize(d)?;
        let span = s.referenced.span();
        let (offset, len) = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => (to_usize(o), to_usize(l)),
            _ => (usize::MAX, 0),
        };
        let len = match s.value {
            Kind::Seq(_) | Kind::Map(_) => 0,
            _ => len,
        };
        Ok(Node {
            kind: s.value,
            offset,
            len,
            line: s.referenced.line(),
            col: s.referenced.column(),
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(i128::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(i128::from(v)))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Kind, E> {
        Ok(i128::try_from(v).map_or_else(
            // Precision loss is acceptable for such absurdly large numbers.
            #[allow(clippy::cast_precision_loss)]
            |_| Kind::Float(v as f64),
            Kind::Int,
        ))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Node>()? {
            let v = a.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Kind::Map(entries))
    }
}

/// Parses every document of `file` (empty documents are skipped).
pub fn parse_documents(file: &Arc<SourceFile>) -> Result<Vec<Node>, Diagnostic> {
    let options = serde_saphyr::options! {
        // YAML 1.2: `no`, `on`, `y` stay strings (country codes, names...).
        strict_booleans: true,
        with_snippet: false,
    };
    match serde_saphyr::from_multiple_with_options::<Node>(file.text(), options) {
        Ok(mut docs) => {
            docs.iter_mut().for_each(|d| d.resolve_offsets(file));
            Ok(docs)
        }
        Err(e) => Err(syntax_error(file, &e)),
    }
}

fn syntax_error(file: &Arc<SourceFile>, e: &serde_saphyr::Error) -> Diagnostic {
    let text = e.without_snippet().to_string();
    // The parser appends its own " at line X, column Y"; we carry the
    // location in the span instead.
    let text = match text.rfind(" at line ") {
        Some(i) => text.get(..i).unwrap_or(&text).to_owned(),
        None => text,
    };
    let text = text.trim().trim_end_matches('.');
    let mut chars = text.chars();
    let message = match chars.next() {
        Some(c) => format!("{}{}", c.to_lowercase(), chars.as_str()),
        None => "invalid yaml".to_owned(),
    };
    let (offset, len) = match e.location() {
        Some(loc) => {
            let span = loc.span();
            match span.byte_offset() {
                Some(o) => (to_usize(o), to_usize(span.byte_len().unwrap_or(0))),
                None => (
                    file.offset_of(to_usize(loc.line()), to_usize(loc.column())),
                    0,
                ),
            }
        }
        None => (0, 0),
    };
    let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        return Diagnostic::at(
            Severity::Error,
            file,
            offset,
            len,
            format!("duplicate key `{key}`"),
        )
        .with_help("each key may appear only once in a mapping; merge the two values");
    }
    Diagnostic::at(
        Severity::Error,
        file,
        offset,
        len,
        format!("invalid yaml: {message}"),
    )
    .with_help("fix the YAML syntax; quote strings that start with `*`, `&`, `!`, `{` or `[`")
}
