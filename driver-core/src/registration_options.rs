//! What a registration target asks of the registered instance, read once for every
//! engine: [`RegistrationOptions`].
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `weight` | relative weight, a whole number from 0 to 2147483647; 0 counts as 1, the default share | 1 |
//! | `group` | the instance's group (resolvers keep one group with `?group=`) | none |
//! | `ttl` | how long the registry keeps an instance whose process stopped renewing it (etcd's lease, consul's TTL check): 1s to 24h, `15` is seconds; `ttl=0` is refused | the engine's, 10 s |
//! | `meta.K=V` | metadata entry `K` (any number; the last of a repeated key wins) | none |
//!
//! A format that stores only some of them (go-zero's etcd value is a bare `host:port`)
//! reads them with [`RegistrationOptions::carried_by`]: an option it cannot store is an
//! error naming it, never silently dropped.
//!
//! Why here: the native etcd and consul drivers and the kratos format read the same
//! parameters, and the copies had drifted apart (ranges, what `0` meant). A format's own
//! limits (consul's rule for metadata keys, say) are checked by the format on top.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::{Error, Result, Target};

/// The registration options of a target; see the [module docs](self).
///
/// ```
/// use dtmdriver_core::{Target, registration_options::RegistrationOptions};
/// let t = Target::parse("etcd://h:2379/svc?weight=3&group=blue&ttl=20s&meta.zone=a").unwrap();
/// let o = RegistrationOptions::from_target(&t).unwrap();
/// assert_eq!((o.weight, o.group.as_str()), (3, "blue"));
/// assert_eq!(o.ttl, Some(std::time::Duration::from_secs(20)));
/// assert_eq!(o.meta["zone"], "a");
/// assert!(RegistrationOptions::from_target(&Target::parse("etcd://h/s?ttl=0").unwrap()).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationOptions {
    /// `?weight=` as given (0 to [`MAX_WEIGHT`](Self::MAX_WEIGHT)); 1 when absent.
    /// Readers count 0 as 1: [`effective_weight`](Self::effective_weight).
    pub weight: u32,
    /// `?group=`, empty for none.
    pub group: String,
    /// `?ttl=`, `None` for the engine's default.
    pub ttl: Option<Duration>,
    /// Every `?meta.K=V` as `K` → `V`.
    pub meta: BTreeMap<String, String>,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        Self {
            weight: 1,
            group: String::new(),
            ttl: None,
            meta: BTreeMap::new(),
        }
    }
}

impl RegistrationOptions {
    /// The largest weight: the int32 range, as the seed registry (Go) reads `Weight`.
    pub const MAX_WEIGHT: u32 = i32::MAX as u32;

    /// The TTLs `?ttl=` may ask for: 1 s to a day.
    pub const TTL_RANGE: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

    /// The TTL when a target gives none.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// Reads `target`'s query; the error names the parameter, the value and what to
    /// write.
    pub fn from_target(target: &Target) -> Result<Self> {
        let mut options = Self {
            ttl: target.query_duration("ttl", &Self::TTL_RANGE)?,
            ..Self::default()
        };
        if let Some(w) = target.query("weight") {
            options.weight = w
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= Self::MAX_WEIGHT)
                .ok_or_else(|| Error::BadTarget {
                    target: target.to_string(),
                    reason: format!(
                        "weight `{w}` is not a whole number from 0 to {}",
                        Self::MAX_WEIGHT
                    ),
                })?;
        }
        for (k, v) in target.query_pairs() {
            if k == "group" {
                options.group = v.clone();
            } else if let Some(key) = k.strip_prefix("meta.") {
                options.meta.insert(key.to_string(), v.clone());
            }
        }
        Ok(options)
    }

    /// The options as [`from_target`](Self::from_target) reads them, for a format that
    /// stores only the `carried` ones (`"weight"`, `"group"`, `"ttl"`, `"meta"` for every
    /// `meta.K`): another one given is an error naming it and what `format` stores.
    ///
    /// ```
    /// use dtmdriver_core::{Target, registration_options::RegistrationOptions};
    /// let t = Target::parse("etcd://h:2379/svc?ttl=30s&weight=3").unwrap();
    /// let e = RegistrationOptions::carried_by(&t, &["ttl"], "go-zero's etcd value, a bare host:port")
    ///     .unwrap_err().to_string();
    /// assert!(e.contains("?weight= cannot be registered in go-zero's etcd value, a bare host:port"), "{e}");
    /// let t = Target::parse("etcd://h:2379/svc?ttl=30s").unwrap();
    /// assert!(RegistrationOptions::carried_by(&t, &["ttl"], "").unwrap().ttl.is_some());
    /// ```
    pub fn carried_by(target: &Target, carried: &[&str], format: &str) -> Result<Self> {
        let options = Self::from_target(target)?;
        let given = [
            ("weight", target.query("weight").is_some()),
            ("group", target.query("group").is_some()),
            ("ttl", options.ttl.is_some()),
            ("meta", !options.meta.is_empty()),
        ];
        match given
            .iter()
            .find(|(name, on)| *on && !carried.contains(name))
        {
            None => Ok(options),
            Some((name, _)) => {
                let name = if *name == "meta" { "meta.K" } else { name };
                Err(Error::bad_target(
                    target,
                    format!(
                        "?{name}= cannot be registered in {format}; drop it, or register with \
                         dtm-driver-etcd or dtm-driver-consul, whose formats store weight, \
                         group, ttl and metadata"
                    ),
                ))
            }
        }
    }

    /// The weight readers use: 0 counts as 1.
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }

    /// The TTL, or [`DEFAULT_TTL`](Self::DEFAULT_TTL).
    pub fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(Self::DEFAULT_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(query: &str) -> Result<RegistrationOptions> {
        RegistrationOptions::from_target(
            &Target::parse(&format!("etcd://h:2379/s{query}")).unwrap(),
        )
    }

    #[test]
    fn each_option_and_its_default() {
        assert_eq!(options("").unwrap(), RegistrationOptions::default());
        let o = options("").unwrap();
        assert_eq!(
            (o.effective_weight(), o.ttl()),
            (1, Duration::from_secs(10))
        );
        let o = options("?weight=0").unwrap();
        assert_eq!((o.weight, o.effective_weight()), (0, 1));
        assert_eq!(options("?weight=2147483647").unwrap().weight, 2147483647);
        assert_eq!(
            options("?ttl=15").unwrap().ttl,
            Some(Duration::from_secs(15))
        );
        assert_eq!(options("?group=blue").unwrap().group, "blue");
        let o = options("?meta.zone=a&meta.zone=b&meta.tier=gold&tag=x").unwrap();
        assert_eq!(
            o.meta,
            BTreeMap::from([
                ("tier".to_string(), "gold".to_string()),
                ("zone".to_string(), "b".to_string())
            ])
        );
        for (query, needle) in [
            (
                "?weight=2147483648",
                "weight `2147483648` is not a whole number from 0 to 2147483647",
            ),
            ("?weight=-1", "weight `-1`"),
            ("?weight=x", "weight `x`"),
            ("?ttl=0", "ttl `0` is not a duration from 1s to 24h"),
            ("?ttl=25h", "ttl `25h`"),
        ] {
            let e = options(query).unwrap_err().to_string();
            assert!(e.contains(needle), "{query}: {e}");
        }
    }

    #[test]
    fn a_format_refuses_each_option_it_cannot_store_by_name() {
        let carried = |query: &str, carried: &[&str]| {
            let t = Target::parse(&format!("etcd://h:2379/s{query}")).unwrap();
            RegistrationOptions::carried_by(&t, carried, "F").map_err(|e| e.to_string())
        };
        for (query, name) in [
            ("?weight=0", "?weight="),
            ("?group=", "?group="),
            ("?ttl=5s", "?ttl="),
            ("?meta.zone=a", "?meta.K="),
        ] {
            let e = carried(query, &[]).unwrap_err();
            assert!(
                e.contains(&format!("{name} cannot be registered in F")),
                "{e}"
            );
        }
        let all = ["weight", "group", "ttl", "meta"];
        let o = carried("?weight=2&group=g&ttl=5s&meta.zone=a&tag=x", &all).unwrap();
        assert_eq!((o.weight, o.ttl), (2, Some(Duration::from_secs(5))));
        // Unknown parameters are the engine's (`user`, `tls_ca`...), and a bad value
        // of a carried option is still its own error.
        assert!(carried("?user=u&tag=x", &[]).is_ok());
        assert!(carried("?ttl=0", &["ttl"]).unwrap_err().contains("ttl `0`"));
    }
}
