//! Rewrites an MCP server's answer to `tools/list` so that it lists only
//! the tools the agent may call ([`aegis_engine::ToolsList`]); tools that
//! need human approval stay, marked in their description and `_meta`.
//!
//! The answer is JSON or a `text/event-stream` carrying one message. Only
//! the `result.tools` array changes: every other member, `nextCursor`
//! included, is copied as the server sent it, in its order. An answer this
//! module cannot read with certainty (not a JSON-RPC result, a duplicate
//! member, several SSE messages) is left as it is, and the caller counts
//! it: listing grants nothing, every call is still judged.

use aegis_engine::Listing;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// What the model reads in the description of a tool that needs approval.
pub const APPROVAL_NOTE: &str = "Calls to this tool need human approval under the aegis policy.";
/// The `_meta` member that marks it for programs.
pub const APPROVAL_META: &str = "aegis/approval";

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    EventStream,
}

impl Framing {
    /// From the response's `content-type`; `None` for anything else.
    pub fn of(content_type: &str) -> Option<Framing> {
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        if mime.eq_ignore_ascii_case("application/json") {
            Some(Framing::Json)
        } else if mime.eq_ignore_ascii_case("text/event-stream") {
            Some(Framing::EventStream)
        } else {
            None
        }
    }
}

/// The members of a JSON object in the order sent, values untouched.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    out.push((k, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    fn parse(json: &'a str) -> Result<Self, &'static str> {
        serde_json::from_str(json).map_err(|_| "not a JSON object without duplicate members")
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The object's JSON text, `replace` standing in for the members it
    /// names (and appended when absent).
    fn write(&self, replace: &[(&str, &str)]) -> String {
        let mut out = String::from("{");
        let mut first = true;
        let mut member = |out: &mut String, k: &str, v: &str| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v);
        };
        for (k, v) in &self.0 {
            let v = replace
                .iter()
                .find(|(rk, _)| rk == k)
                .map_or(v.get(), |(_, rv)| *rv);
            member(&mut out, k, v);
        }
        for (rk, rv) in replace {
            if self.get(rk).is_none() {
                member(&mut out, rk, rv);
            }
        }
        out.push('}');
        out
    }
}

/// What the filtering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The new body; `None`: unchanged (every tool listed as sent).
    pub body: Option<Vec<u8>>,
    pub hidden: usize,
    pub marked: usize,
}

/// Filters one `tools/list` answer. `Err`: the reason it is left as it is.
pub fn filter(
    framing: Framing,
    body: &[u8],
    show: impl Fn(&str) -> Listing,
) -> Result<Filtered, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8")?;
    match framing {
        Framing::Json => {
            let (json, hidden, marked) = filter_message(text, &show)?;
            Ok(Filtered {
                body: json.map(String::into_bytes),
                hidden,
                marked,
            })
        }
        Framing::EventStream => filter_event_stream(text, &show),
    }
}

/// The JSON-RPC answer with its tools filtered; `None` when nothing
/// changes (all listed as sent, or an error answer).
fn filter_message(
    text: &str,
    show: &dyn Fn(&str) -> Listing,
) -> Result<(Option<String>, usize, usize), &'static str> {
    let top = Members::parse(text)?;
    if top.get("jsonrpc").map(RawValue::get) != Some("\"2.0\"") {
        return Err("not a JSON-RPC 2.0 message");
    }
    let Some(result) = top.get("result") else {
        return if top.get("error").is_some() {
            Ok((None, 0, 0))
        } else {
            Err("neither a result nor an error")
        };
    };
    let result_members = Members::parse(result.get())?;
    let tools: Vec<&RawValue> = match result_members.get("tools") {
        Some(t) => serde_json::from_str(t.get()).map_err(|_| "`result.tools` is not an array")?,
        None => return Err("the result has no `tools`"),
    };
    let mut kept: Vec<String> = Vec::with_capacity(tools.len());
    let (mut hidden, mut marked) = (0, 0);
    for tool in tools {
        let members = Members::parse(tool.get())?;
        let name: &str = members
            .get("name")
            .and_then(|n| serde_json::from_str(n.get()).ok())
            .ok_or("a tool without a string `name`")?;
        match show(name) {
            Listing::Hidden => hidden += 1,
            Listing::Callable => kept.push(tool.get().to_owned()),
            Listing::NeedsApproval => {
                marked += 1;
                kept.push(mark_approval(&members)?);
            }
        }
    }
    if hidden == 0 && marked == 0 {
        return Ok((None, 0, 0));
    }
    let tools = format!("[{}]", kept.join(","));
    let result = result_members.write(&[("tools", &tools)]);
    Ok((Some(top.write(&[("result", &result)])), hidden, marked))
}

/// The tool with [`APPROVAL_NOTE`] in its description and
/// [`APPROVAL_META`] in its `_meta`.
fn mark_approval(tool: &Members<'_>) -> Result<String, &'static str> {
    let description = match tool.get("description") {
        None => APPROVAL_NOTE.to_owned(),
        Some(d) => {
            let d: String = serde_json::from_str(d.get())
                .map_err(|_| "a tool `description` is not a string")?;
            if d.is_empty() {
                APPROVAL_NOTE.to_owned()
            } else {
                format!("{d} ({APPROVAL_NOTE})")
            }
        }
    };
    let description = serde_json::to_string(&description).map_err(|_| "cannot write JSON")?;
    let required = "\"required\"";
    let meta = match tool.get("_meta") {
        None => format!(
            "{{{}:{required}}}",
            serde_json::to_string(APPROVAL_META).unwrap_or_default()
        ),
        Some(m) => Members::parse(m.get())?.write(&[(APPROVAL_META, required)]),
    };
    Ok(tool.write(&[("description", &description), ("_meta", &meta)]))
}

/// One SSE message (`data:` lines of one event) carrying the answer; other
/// lines (`event:`, `id:`, comments) are kept as sent.
fn filter_event_stream(
    text: &str,
    show: &dyn Fn(&str) -> Listing,
) -> Result<Filtered, &'static str> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut data_lines: Vec<usize> = Vec::new();
    let mut data = String::new();
    let mut events = 0;
    let mut in_event = false;
    for (i, line) in lines.iter().enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        if content.is_empty() {
            if in_event {
                events += 1;
                in_event = false;
            }
            continue;
        }
        let Some(value) = content.strip_prefix("data:") else {
            continue;
        };
        if !in_event && events > 0 {
            return Err("more than one event-stream message");
        }
        if in_event {
            data.push('\n');
        }
        data.push_str(value.strip_prefix(' ').unwrap_or(value));
        data_lines.push(i);
        in_event = true;
    }
    let Some(&first) = data_lines.first() else {
        return Err("an event stream without a message");
    };
    let (json, hidden, marked) = filter_message(&data, show)?;
    let Some(json) = json else {
        return Ok(Filtered {
            body: None,
            hidden,
            marked,
        });
    };
    // Raw newlines in JSON text are whitespace between tokens (inside
    // strings they are escaped), and would end the `data:` line.
    let json = json.replace(['\n', '\r'], " ");
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if i == first {
            let end = line
                .get(line.trim_end_matches(['\n', '\r']).len()..)
                .unwrap_or_default();
            out.push_str("data: ");
            out.push_str(&json);
            out.push_str(if end.is_empty() { "\n" } else { end });
        } else if !data_lines.contains(&i) {
            out.push_str(line);
        }
    }
    Ok(Filtered {
        body: Some(out.into_bytes()),
        hidden,
        marked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn show(name: &str) -> Listing {
        match name {
            "get_weather" | "search" => Listing::Callable,
            "deploy" => Listing::NeedsApproval,
            _ => Listing::Hidden,
        }
    }

    fn list(tools: Value, cursor: Option<&str>) -> String {
        let mut result = json!({"tools": tools});
        if let Some(c) = cursor {
            result["nextCursor"] = json!(c);
        }
        json!({"jsonrpc": "2.0", "id": 3, "result": result}).to_string()
    }

    fn tool(name: &str) -> Value {
        json!({"name": name, "description": format!("the {name} tool"),
               "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
    }

    fn names(v: &Value) -> Vec<&str> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn json_lists_only_callable_tools_and_marks_approval() {
        let body = list(
            json!([
                tool("get_weather"),
                tool("delete_repo"),
                tool("deploy"),
                tool("search")
            ]),
            Some("page-2"),
        );
        let f = filter(Framing::Json, body.as_bytes(), show).unwrap();
        assert_eq!((f.hidden, f.marked), (1, 1));
        let v: Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
        assert_eq!(names(&v), ["get_weather", "deploy", "search"]);
        assert_eq!(v["id"], 3);
        assert_eq!(v["result"]["nextCursor"], "page-2");
        let deploy = &v["result"]["tools"][1];
        assert_eq!(
            deploy["description"],
            format!("the deploy tool ({APPROVAL_NOTE})")
        );
        assert_eq!(deploy["_meta"][APPROVAL_META], "required");
        assert_eq!(deploy["inputSchema"], tool("deploy")["inputSchema"]);
        // Callable tools are copied byte for byte.
        let text = String::from_utf8(
            filter(Framing::Json, body.as_bytes(), show)
                .unwrap()
                .body
                .unwrap(),
        )
        .unwrap();
        assert!(text.contains(&tool("get_weather").to_string()), "{text}");
    }

    #[test]
    fn existing_meta_is_kept_and_a_missing_description_added() {
        let body = list(json!([{"name": "deploy", "_meta": {"x/y": 1}}]), None);
        let f = filter(Framing::Json, body.as_bytes(), show).unwrap();
        let v: Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
        let t = &v["result"]["tools"][0];
        assert_eq!(t["description"], APPROVAL_NOTE);
        assert_eq!(t["_meta"], json!({"x/y": 1, APPROVAL_META: "required"}));
    }

    #[test]
    fn nothing_to_change_leaves_the_body_alone() {
        let body = list(json!([tool("get_weather"), tool("search")]), None);
        let f = filter(Framing::Json, body.as_bytes(), show).unwrap();
        assert_eq!(f.body, None);
        let error = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(
            filter(Framing::Json, error.as_bytes(), show).unwrap().body,
            None
        );
        let empty = list(json!([]), None);
        assert_eq!(
            filter(Framing::Json, empty.as_bytes(), show).unwrap().body,
            None
        );
    }

    #[test]
    fn what_cannot_be_read_with_certainty_is_refused() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":1}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","name":"delete_repo"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"delete_repo"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"delete_repo"}]}}"#,
        ] {
            assert!(
                filter(Framing::Json, bad.as_bytes(), show).is_err(),
                "{bad}"
            );
        }
        assert!(filter(Framing::Json, b"\xff", show).is_err());
    }

    #[test]
    fn one_sse_message_is_filtered_in_place() {
        let body = list(json!([tool("delete_repo"), tool("get_weather")]), None);
        let sse = format!("event: message\r\nid: 7\r\ndata: {body}\r\n\r\n");
        let f = filter(Framing::EventStream, sse.as_bytes(), show).unwrap();
        let out = String::from_utf8(f.body.unwrap()).unwrap();
        assert!(
            out.starts_with("event: message\r\nid: 7\r\ndata: {"),
            "{out}"
        );
        assert!(out.ends_with("}\r\n\r\n"), "{out}");
        let data = out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(names(&v), ["get_weather"]);
    }

    #[test]
    fn a_pretty_printed_answer_split_over_data_lines_becomes_one_line() {
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&list(
                json!([tool("delete_repo"), tool("deploy")]),
                None,
            ))
            .unwrap(),
        )
        .unwrap();
        let data: Vec<String> = pretty.lines().map(|l| format!("data: {l}\n")).collect();
        let sse = format!("event: message\n{}\n", data.concat());
        let f = filter(Framing::EventStream, sse.as_bytes(), show).unwrap();
        let out = String::from_utf8(f.body.unwrap()).unwrap();
        assert_eq!(out.matches("data:").count(), 1, "{out}");
        let line = out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(names(&v), ["deploy"]);
    }

    #[test]
    fn several_sse_messages_are_left_alone() {
        let body = list(json!([tool("delete_repo")]), None);
        let two = format!("data: {body}\n\ndata: {body}\n\n");
        assert!(filter(Framing::EventStream, two.as_bytes(), show).is_err());
        assert!(filter(Framing::EventStream, b": keep-alive\n\n", show).is_err());
    }

    #[test]
    fn framing_from_content_type() {
        assert_eq!(Framing::of("application/json"), Some(Framing::Json));
        assert_eq!(
            Framing::of("Application/JSON; charset=utf-8"),
            Some(Framing::Json)
        );
        assert_eq!(Framing::of("text/event-stream"), Some(Framing::EventStream));
        assert_eq!(Framing::of("text/plain"), None);
    }
}
