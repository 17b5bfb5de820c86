//! Generic YAML node tree with source spans (proto)
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

#[derive(Debug, Clone)]
pub struct Node { pub kind: Kind, pub line: u64, pub col: u64, pub off: Option<u64>, pub len: Option<u64> }
#[derive(Debug, Clone)]
pub enum Kind { Null, Bool(bool), Int(i64), Num(f64), Str(String), Seq(Vec<Node>), Map(Vec<(Node, Node)>) }

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Kind>::deserialize(d)?;
        let sp = s.referenced.span();
        Ok(Node { kind: s.value, line: s.referenced.line(), col: s.referenced.column(), off: sp.byte_offset(), len: sp.byte_len() })
    }
}
struct KV;
impl<'de> Visitor<'de> for KV {
    type Value = Kind;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { f.write_str("any yaml") }
    fn visit_unit<E>(self) -> Result<Kind, E> { Ok(Kind::Null) }
    fn visit_none<E>(self) -> Result<Kind, E> { Ok(Kind::Null) }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> { Ok(Kind::Bool(v)) }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> { Ok(Kind::Int(v)) }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> { Ok(Kind::Num(v as f64)) }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> { Ok(Kind::Num(v)) }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> { Ok(Kind::Str(v.to_owned())) }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> { Ok(Kind::Str(v)) }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut v = Vec::new();
        while let Some(n) = a.next_element::<Node>()? { v.push(n); }
        Ok(Kind::Seq(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut v = Vec::new();
        while let Some(k) = a.next_key::<Node>()? { let val = a.next_value::<Node>()?; v.push((k, val)); }
        Ok(Kind::Map(v))
    }
}
impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> { d.deserialize_any(KV) }
}
#[allow(unused)]
fn _e() -> Option<de::value::Error> { None }

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn proto() {
        let src = "agent: x\nhosts: [\"*.a.b\", 'c', 12, 1.5, true, yes, ~]\nnested:\n  a: {b: 1}\n  c:\n    - d: 2\n---\n# empty\n---\nfoo: \"5000\"\nbar: |\n  multi\n  line\n";
        let opts = serde_saphyr::options! { strict_booleans: true };
        let r: Result<Vec<Node>, _> = serde_saphyr::from_multiple_with_options(src, opts);
        println!("{:#?}", r);
        for bad in ["a: [1, 2\nb: 3\n", "a: 1\na: 2\n", "a: b: c\n", "x: *nope\n", "a:\n  - 1\n b: 2\n"] {
            let opts = serde_saphyr::options! { strict_booleans: true, with_snippet: false };
            let r: Result<Vec<Node>, serde_saphyr::Error> = serde_saphyr::from_multiple_with_options(bad, opts);
            let e = r.unwrap_err();
            println!("ERR {:?}\n DISPLAY {}\n LOC {:?}", e, e, e.location());
        }
    }
}
