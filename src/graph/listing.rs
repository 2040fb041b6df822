//! One page of an item's attachment list, read as it arrives: each attachment's id and name go
//! to a [`Sink`] and are dropped, so an item with 100,000 attachments costs a read buffer, not
//! its whole answer (~70 MB from the sandbox, which sends every field) held and then parsed.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::io::Read;

/// Where the attachments of a listing go, one at a time.
pub trait Sink {
    fn add(&mut self, id: &str, name: &str);
}

/// A count of the attachments.
impl Sink for usize {
    fn add(&mut self, _id: &str, _name: &str) {
        *self += 1;
    }
}

/// Read one page (`{"value": [...], "@odata.nextLink": "..."}`) from `r`, handing each
/// attachment to `sink`; answers the page's `@odata.nextLink`, if any.
pub fn read_page<R: Read, S: Sink>(r: R, sink: &mut S) -> serde_json::Result<Option<String>> {
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, r));
    let next = Page { sink }.deserialize(&mut de)?;
    de.end()?;
    Ok(next)
}

#[derive(serde::Deserialize)]
struct Attachment<'a> {
    #[serde(alias = "Id", borrow)]
    id: Cow<'a, str>,
    #[serde(alias = "Name", borrow, default)]
    name: Cow<'a, str>,
}

struct Page<'s, S> {
    sink: &'s mut S,
}

impl<'de, S: Sink> DeserializeSeed<'de> for Page<'_, S> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for Page<'_, S> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attachment list page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut next = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "value" => map.next_value_seed(Values {
                    sink: &mut *self.sink,
                })?,
                "@odata.nextLink" => next = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(next)
    }
}

struct Values<'s, S> {
    sink: &'s mut S,
}

impl<'de, S: Sink> DeserializeSeed<'de> for Values<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for Values<'_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of attachments")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(a) = seq.next_element::<Attachment>()? {
            self.sink.add(&a.id, &a.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Sink for Vec<(String, String)> {
        fn add(&mut self, id: &str, name: &str) {
            self.push((id.to_string(), name.to_string()));
        }
    }

    type Listed = (Vec<(String, String)>, Option<String>);

    fn read(s: &str) -> serde_json::Result<Listed> {
        let mut v = Vec::new();
        let next = read_page(s.as_bytes(), &mut v)?;
        Ok((v, next))
    }

    #[test]
    fn every_attachment_reaches_the_sink_in_order_with_the_next_link() {
        let (v, next) = read(
            r##"{"@odata.context":"x","value":[
                {"@odata.type":"#microsoft.graph.fileAttachment","id":"A1","name":"a.pdf","size":3,"contentType":"application/pdf","extra":{"deep":[1,{"x":"]}"}]}},
                {"id":"A2","name":"q\"uo\\te \u00e9 {}.txt"},
                {"Id":"A3","Name":"cased.txt"},
                {"id":"A4"}
            ],"@odata.nextLink":"https://graph.microsoft.com/v1.0/next"}"##,
        )
        .unwrap();
        assert_eq!(
            v,
            [
                ("A1".into(), "a.pdf".into()),
                ("A2".into(), "q\"uo\\te é {}.txt".into()),
                ("A3".into(), "cased.txt".into()),
                ("A4".into(), String::new()),
            ]
        );
        assert_eq!(
            next.as_deref(),
            Some("https://graph.microsoft.com/v1.0/next")
        );
    }

    #[test]
    fn the_next_link_may_come_first_and_may_be_absent_or_null() {
        let (v, next) = read(r#"{"@odata.nextLink":"n","value":[{"id":"x","name":"y"}]}"#).unwrap();
        assert_eq!((v.len(), next.as_deref()), (1, Some("n")));
        assert_eq!(read(r#"{"value":[]}"#).unwrap(), (vec![], None));
        assert_eq!(
            read(r#"{"value":[],"@odata.nextLink":null}"#).unwrap(),
            (vec![], None)
        );
        assert_eq!(read(r#"{}"#).unwrap(), (vec![], None));
    }

    #[test]
    fn a_broken_or_truncated_page_is_an_error() {
        for bad in [
            r#"{"value":[{"id":"x","name":"y"}"#,
            r#"{"value":[{"name":"no id"}]}"#,
            r#"{"value":{"id":"x"}}"#,
            r#"[]"#,
            r#"{"value":[]} trailing"#,
            "",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
