//! Reading Prometheus text exposition (`/stats/prometheus`).

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample in `text` (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

/// The samples called `name`.
pub fn named<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let name = line.get(..open)?;
            let (labels, after) = parse_labels(line.get(open + 1..)?)?;
            (name, labels, after)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels after the `{`; returns them and the text after the `}`.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest.get(..eq)?.trim().to_string();
        rest = rest.get(eq + 1..)?.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = rest.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_values() {
        let text = "# TYPE aegis_decision_total counter\n\
            aegis_decision_total{agent=\"acme/soc-agent\",tool=\"-\",decision=\"deny\",mode=\"enforce\"} 3\n\
            envoy_server_live{} 1\n\
            plain 2.5\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "aegis_decision_total");
        assert_eq!(s[0].labels["agent"], "acme/soc-agent");
        assert_eq!(s[0].labels["tool"], "-");
        assert_eq!(s[0].value, 3.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].value, 2.5);
        let q = parse("m{a=\"x\\\"y\",b=\"#0\"} 1\n");
        assert_eq!(q[0].labels["a"], "x\"y");
        assert_eq!(q[0].labels["b"], "#0");
    }
}
