//! The `kind: Limits` document: how much of a request the gate reads
//! before it denies (body size, JSON nesting, number of values).

use aegis_engine::Limits;

use super::read::Cx;
use super::yaml::{Kind, Node};

const LIMIT_KEYS: &[&str] = &["kind", "max_body_bytes", "max_json_depth", "max_params"];

pub fn parse(cx: &mut Cx<'_>, doc: &Node) -> Option<Limits> {
    let f = cx.fields(doc, "Limits", "a limits document", LIMIT_KEYS)?;
    let mut out = Limits::default();
    let mut ok = true;
    let fields: [(&str, &mut u32, u32); 3] = [
        (
            "max_body_bytes",
            &mut out.max_body_bytes,
            Limits::MAX.max_body_bytes,
        ),
        (
            "max_json_depth",
            &mut out.max_json_depth,
            Limits::MAX.max_json_depth,
        ),
        ("max_params", &mut out.max_params, Limits::MAX.max_params),
    ];
    for (key, slot, max) in fields {
        let Some(n) = f.get(key) else { continue };
        match &n.kind {
            Kind::Int(i) if (1..=i128::from(max)).contains(i) => {
                *slot = u32::try_from(*i).unwrap_or(max);
            }
            _ => {
                cx.error(
                    n,
                    format!("`{key}` must be a whole number from 1 to {max}"),
                    format!("the default is {}", default_of(key)),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn default_of(key: &str) -> u32 {
    let d = Limits::default();
    match key {
        "max_body_bytes" => d.max_body_bytes,
        "max_json_depth" => d.max_json_depth,
        _ => d.max_params,
    }
}
