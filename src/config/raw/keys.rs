//! The key map: every key of the document with its dotted path and span, to name the key of
//! any error; and, for a syntax error where no key map exists, a guess from the text.

use super::*;

/// The shape of the document, keys with spans; values only as far as they contain keys.
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = a.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<Spanned<String>>()? {
                    entries.push((k, a.next_value::<Node>()?));
                }
                Ok(Node::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every key's byte offset and dotted path (`agent.chunk_size`, `mapping[2].folder`), sorted.
pub(super) struct KeyMap(pub(super) Vec<(usize, String)>);

impl KeyMap {
    pub(super) fn new(text: &str) -> KeyMap {
        fn walk(node: &Node, prefix: &str, out: &mut Vec<(usize, String)>) {
            match node {
                Node::Table(entries) => {
                    for (k, v) in entries {
                        let path = if prefix.is_empty() {
                            k.get_ref().clone()
                        } else {
                            format!("{prefix}.{}", k.get_ref())
                        };
                        out.push((k.span().start, path.clone()));
                        walk(v, &path, out);
                    }
                }
                Node::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, &format!("{prefix}[{i}]"), out);
                    }
                }
                Node::Leaf => {}
            }
        }
        let mut out = Vec::new();
        // Only datetimes fail here (their internal keys carry no span); then errors lose the key
        // but keep the line.
        if let Ok(root) = toml::from_str::<Node>(text) {
            walk(&root, "", &mut out);
        }
        out.sort_by_key(|(offset, _)| *offset);
        KeyMap(out)
    }

    /// The key written last at or before `offset`: the key whose value holds the offset.
    pub(super) fn key_at(&self, offset: usize) -> Option<&str> {
        let i = self.0.partition_point(|(o, _)| *o <= offset);
        i.checked_sub(1).map(|i| self.0[i].1.as_str())
    }

    /// Offset of the first key under `prefix` (e.g. `mapping[2].`).
    pub(super) fn first_under(&self, prefix: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(_, p)| p.starts_with(prefix))
            .map(|(o, _)| *o)
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// For a syntax error, where no key map exists: the table header above and the key on the line.
pub(super) fn guess_key(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let mut table = String::new();
    for line in text.lines().take(line_no - 1) {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(end) = h.find(']') {
                table = h[..end].trim().to_owned();
            }
        }
    }
    let here = text.lines().nth(line_no - 1).unwrap_or("").trim();
    if let Some(h) = here.strip_prefix('[') {
        let h = h
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return if h.is_empty() {
            "(toml)".to_owned()
        } else {
            h.to_owned()
        };
    }
    let key = here.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
    });
    match (table.is_empty(), key) {
        (true, Some(k)) => k.to_owned(),
        (false, Some(k)) => format!("{table}.{k}"),
        (false, None) => table,
        (true, None) => "(toml)".to_owned(),
    }
}

/// For a syntax error on a `[table]` header that an earlier line already opened (a block pasted
/// into a config that has the table, as the sandbox's banner into an `outbox init` config): the
/// table's name and that earlier line. A `[[array]]` header starts a new element, so the
/// sub-tables of the one before it (`[mapping.new_message]`) may come again.
pub(super) fn repeated_table(text: &str, offset: usize) -> Option<(String, usize)> {
    fn header(line: &str) -> Option<(bool, String)> {
        let t = line.trim();
        let array = t.starts_with("[[");
        let inner = t.trim_start_matches('[');
        let name = inner.split(']').next()?.trim();
        let name: String = name
            .split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\''))
            .collect::<Vec<_>>()
            .join(".");
        (t.starts_with('[') && !name.is_empty()).then_some((array, name))
    }
    let line_no = line_of(text, offset);
    let (array, name) = header(text.lines().nth(line_no - 1)?)?;
    if array {
        return None;
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, line) in text.lines().take(line_no - 1).enumerate() {
        match header(line) {
            Some((true, a)) => seen.retain(|(n, _)| !n.starts_with(&format!("{a}."))),
            Some((false, n)) => seen.push((n, i + 1)),
            None => {}
        }
    }
    seen.into_iter().find(|(n, _)| *n == name)
}
