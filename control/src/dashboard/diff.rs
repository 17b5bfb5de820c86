//! The difference between two revisions' `aegis explain` text, line by
//! line: what the policy page shows and `aegis bundles diff` prints.

use similar::{ChangeTag, TextDiff};

/// One line of a diff: `' '` kept, `'-'` only in the old text, `'+'` only
/// in the new one.
pub fn lines(old: &str, new: &str) -> Vec<(char, String)> {
    TextDiff::from_lines(old, new)
        .iter_all_changes()
        .map(|c| {
            let tag = match c.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            };
            (tag, c.value().trim_end_matches('\n').to_owned())
        })
        .collect()
}

/// A unified diff of `old` (named `old_name`) and `new`, with three lines
/// of context; empty when they are the same.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_are_marked() {
        let d = lines("a\nb\nc\n", "a\nB\nc\n");
        assert_eq!(
            d,
            vec![
                (' ', "a".to_owned()),
                ('-', "b".to_owned()),
                ('+', "B".to_owned()),
                (' ', "c".to_owned())
            ]
        );
        assert!(unified("a\n", "b\n", "r1", "r2").contains("-a\n+b\n"));
        assert_eq!(unified("a\n", "a\n", "r1", "r2"), "");
    }
}
