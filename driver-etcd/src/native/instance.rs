//! [`Instance`], one native etcd value: written in our documented lowercase JSON, read
//! the way Go's `encoding/json` reads it into the seed registry's untagged struct.
//!
//! The contract is on [`Instance`] (this module is private; its docs are the type's).
//!
//! Why: the design's source registry (shared/seeds/003) declares `ServiceInstance`
//! without JSON tags, so Go writes `{"Name":…,"Address":…,"Weight":…,"Group":…}` and our
//! lowercase `{"name":…}` is read back by Go only through its case-insensitive match.
//! Reading the same way makes both writers' values one format.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One instance as stored in etcd (the format: [`crate::native`]).
///
/// Written (`Serialize`): `{"name":…,"address":…,"weight":…,"group":…,"metadata":{…}}`,
/// every member, lowercase.
///
/// Read (`Deserialize`), as Go's `encoding/json` reads the seed registry's untagged
/// `ServiceInstance{Name, Address string; Weight int32; Group string}`:
///
/// * the value is a JSON object; its member names are matched against `name`,
///   `address`, `weight`, `group` and `metadata` case-insensitively, with Go's folding
///   (ASCII letters and the simple Unicode upper case, so `Name`, `NAME` and `nAmE` are
///   all `name`); when a field appears more than once, the last one wins;
/// * `name`, `address`, `group`: a string, or `null` (left unset); `weight`: a whole
///   number in the signed 32-bit range, or `null`; `metadata` (ours, unknown to Go): an
///   object of strings, or `null`. Any other member is ignored. A wrong type or a weight
///   out of range is an error, as Go's `json.Unmarshal` returns one (the seed's
///   `ListServices` then skips the entry);
/// * a missing `name`, `group` or `metadata` is empty; a missing `weight` is 1, and so
///   is a zero or negative one: the seed writes `"Weight":0` for every server started
///   without a weight and hands negative weights to its balancer unchanged, so such an
///   instance is in service there; our weighted round robin needs a positive weight and
///   gives it the default share rather than hiding a serving instance.
///
/// ```
/// let go: dtmdriver_etcd::Instance =
///     serde_json::from_str(r#"{"Name":"seed","Address":"127.0.0.1:7001","Weight":5,"Group":"blue"}"#)
///         .unwrap();
/// assert_eq!((go.address.as_str(), go.weight, go.group.as_str()), ("127.0.0.1:7001", 5, "blue"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The service name.
    pub name: String,
    /// `host:port` to dial.
    pub address: String,
    /// Relative weight, at least 1 when read (missing, zero or negative read as 1).
    pub weight: u32,
    /// The group, empty when missing.
    pub group: String,
    /// Free-form metadata, empty when missing.
    pub metadata: BTreeMap<String, String>,
}

/// The fields a member name can mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Address,
    Weight,
    Group,
    Metadata,
}

impl Field {
    /// The field `key` names under Go's case-insensitive match, if any.
    fn of(key: &str) -> Option<Field> {
        let folded: String = key.chars().map(go_fold).collect();
        Some(match folded.as_str() {
            "NAME" => Field::Name,
            "ADDRESS" => Field::Address,
            "WEIGHT" => Field::Weight,
            "GROUP" => Field::Group,
            "METADATA" => Field::Metadata,
            _ => return None,
        })
    }
}

/// One character as Go's `encoding/json` folds member names: its upper case when that
/// is a single character (Go's simple case mapping), else itself.
fn go_fold(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InstanceVisitor)
    }
}

struct InstanceVisitor;

impl<'de> Visitor<'de> for InstanceVisitor {
    type Value = Instance;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with name, address, weight, group (any case) and metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Instance, A::Error> {
        let mut instance = Instance {
            weight: 1,
            ..Instance::default()
        };
        while let Some(key) = map.next_key::<String>()? {
            match Field::of(&key) {
                Some(Field::Name) => set(&mut instance.name, map.next_value()?),
                Some(Field::Address) => set(&mut instance.address, map.next_value()?),
                Some(Field::Group) => set(&mut instance.group, map.next_value()?),
                Some(Field::Metadata) => set(&mut instance.metadata, map.next_value()?),
                Some(Field::Weight) => {
                    if let Some(w) = map.next_value::<Option<i64>>()? {
                        let w = i32::try_from(w).map_err(|_| {
                            serde::de::Error::custom(format!(
                                "weight {w} is outside the signed 32-bit range \
                                 (-2147483648 to 2147483647)"
                            ))
                        })?;
                        instance.weight = u32::try_from(w).ok().filter(|&w| w > 0).unwrap_or(1);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(instance)
    }
}

/// Go leaves a field alone on `null`.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Instance, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_seed_registry_value_with_go_field_names() {
        let i = read(r#"{"Name":"seed","Address":"127.0.0.1:7001","Weight":5,"Group":"blue"}"#)
            .unwrap();
        assert_eq!(
            i,
            Instance {
                name: "seed".into(),
                address: "127.0.0.1:7001".into(),
                weight: 5,
                group: "blue".into(),
                metadata: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn matches_member_names_in_any_case_as_go_does() {
        let i = read(r#"{"NAME":"s","aDdReSs":"h:1","wEIGHT":3,"group":"g","MetaData":{"k":"v"}}"#)
            .unwrap();
        assert_eq!((i.name.as_str(), i.address.as_str()), ("s", "h:1"));
        assert_eq!((i.weight, i.group.as_str()), (3, "g"));
        assert_eq!(i.metadata["k"], "v");
        // Go folds with the simple Unicode upper case: the long s (ſ) is an S.
        assert_eq!(read(r#"{"addreſſ":"h:2"}"#).unwrap().address, "h:2");
        // A name that folds to none of ours is someone else's field.
        assert_eq!(
            read(r#"{"addresses":"h:3","address":"h:4"}"#)
                .unwrap()
                .address,
            "h:4"
        );
    }

    #[test]
    fn the_last_of_repeated_members_wins() {
        let i = read(r#"{"Address":"h:1","address":"h:2","Weight":2,"WEIGHT":7}"#).unwrap();
        assert_eq!((i.address.as_str(), i.weight), ("h:2", 7));
    }

    #[test]
    fn ignores_unknown_members_and_reads_ours_when_present() {
        let i = read(r#"{"address":"h:1","Version":"v1","Tags":["a"],"Extra":{"x":1}}"#).unwrap();
        assert!(i.metadata.is_empty() && i.name.is_empty() && i.group.is_empty());
        let i = read(r#"{"address":"h:1","metadata":{"zone":"a"}}"#).unwrap();
        assert_eq!(i.metadata["zone"], "a");
        let i = read(r#"{"address":"h:1","metadata":null,"Group":null,"Weight":null}"#).unwrap();
        assert_eq!((i.weight, i.group.as_str()), (1, ""));
    }

    #[test]
    fn missing_zero_and_negative_weights_read_as_one() {
        assert_eq!(read(r#"{"Address":"h:1"}"#).unwrap().weight, 1);
        assert_eq!(read(r#"{"Address":"h:1","Weight":0}"#).unwrap().weight, 1);
        assert_eq!(read(r#"{"Address":"h:1","Weight":-4}"#).unwrap().weight, 1);
        assert_eq!(
            read(r#"{"Address":"h:1","Weight":-2147483648}"#)
                .unwrap()
                .weight,
            1
        );
        assert_eq!(
            read(r#"{"Address":"h:1","Weight":2147483647}"#)
                .unwrap()
                .weight,
            2_147_483_647
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        for (json, says) in [
            (
                r#"{"Address":"h:1","Weight":2147483648}"#,
                "signed 32-bit range",
            ),
            (
                r#"{"Address":"h:1","Weight":-2147483649}"#,
                "signed 32-bit range",
            ),
            (r#"{"Address":"h:1","Weight":1.5}"#, "floating point"),
            (r#"{"Address":"h:1","Weight":"5"}"#, "string"),
            (r#"{"Address":7}"#, "integer"),
            (r#"{"Address":"h:1","metadata":{"k":1}}"#, "integer"),
            (r#"["h:1"]"#, "sequence"),
            ("garbage", "expected"),
        ] {
            let err = read(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    fn writes_our_lowercase_format() {
        let i = Instance {
            name: "svc".into(),
            address: "127.0.0.1:1".into(),
            weight: 5,
            group: "blue".into(),
            metadata: [("v".to_string(), "1".to_string())].into(),
        };
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"name":"svc","address":"127.0.0.1:1","weight":5,"group":"blue","metadata":{"v":"1"}}"#
        );
        assert_eq!(read(&serde_json::to_string(&i).unwrap()).unwrap(), i);
    }
}
