//! Reading settings from the environment: one generic reader, [`Env`], that
//! every configuration parser of the platform uses (the shared
//! [`ServiceConfig`](crate::config::ServiceConfig) and each service's own
//! settings), so every variable is read, defaulted and refused the same way.
//!
//! - An empty (or all-blank) value counts as unset.
//! - A malformed value is a [`ConfigError`] naming the variable, which stops
//!   the process at start with exit code 64 (DESIGN §5).
//! - A secret `X` may instead be given as `X_FILE`, a path whose content is
//!   the value ([`Env::secret`]), as Kubernetes and compose mount secrets.
//!
//! ```
//! use std::time::Duration;
//! use ymera_core::env::Env;
//!
//! let env = Env::from_lookup(|name| (name == "WORKERS").then(|| "8".to_owned()));
//! assert_eq!(env.number("WORKERS", 4u32, 1..=64).unwrap(), 8);
//! assert_eq!(env.duration("POLL", Duration::from_secs(30)).unwrap(), Duration::from_secs(30));
//! assert_eq!(env.number("WORKERS", 4u32, 1..=2).unwrap_err().variable, "WORKERS");
//! ```

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::config::ConfigError;

/// How an [`Env`] finds a variable's value.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// A source of settings: the process environment or, in tests, any lookup.
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Env<'static> {
    /// The process environment (values that are not UTF-8 count as unset).
    pub fn from_process() -> Env<'static> {
        Env::from_lookup(|name| std::env::var(name).ok())
    }
}

impl<'a> Env<'a> {
    /// Settings read through `lookup` (a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + 'a) -> Env<'a> {
        Env {
            lookup: Box::new(lookup),
        }
    }

    /// The raw value of `name`; empty or blank values count as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, or an error naming it when it is unset.
    pub fn require(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, "required but not set"))
    }

    /// A secret: `name`, or else the content of the file named by
    /// `name_FILE` (one trailing newline removed). Unset when neither is.
    pub fn secret(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        if let Some(value) = self.get(name) {
            return Ok(Some(value));
        }
        let Some(path) = self.get(&format!("{name}_FILE")) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path.trim()).map_err(|err| {
            ConfigError::new(name, format!("{name}_FILE={path}: cannot read: {err}"))
        })?;
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if value.trim().is_empty() {
            return Err(ConfigError::new(
                name,
                format!("{name}_FILE={path}: the file is empty"),
            ));
        }
        Ok(Some(value.to_owned()))
    }

    /// The one generic parser: `parse` turns the (trimmed) value of `name`
    /// into a `T` or says what is wrong; unset is `Ok(None)`. Every other
    /// reader is built on it.
    pub fn value<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse(raw.trim()).map(Some).map_err(|reason| ConfigError {
                variable: name,
                reason,
            }),
        }
    }

    /// `name` parsed with [`FromStr`], or `default`; a malformed value is
    /// refused as "not `expected`" (e.g. "a socket address like 0.0.0.0:8080").
    pub fn parse<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        Ok(self
            .value(name, |text| {
                text.parse::<T>()
                    .map_err(|_| format!("{text:?} is not {expected}"))
            })?
            .unwrap_or(default))
    }

    /// A whole number within `bounds`, or `default`.
    pub fn number<T>(
        &self,
        name: &'static str,
        default: T,
        bounds: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
    {
        Ok(self
            .value(name, |text| match text.parse::<T>() {
                Ok(n) if bounds.contains(&n) => Ok(n),
                _ => Err(format!(
                    "{text:?} is not a whole number between {} and {}",
                    bounds.start(),
                    bounds.end()
                )),
            })?
            .unwrap_or(default))
    }

    /// A whole number of milliseconds within `bounds` (for `…_MS` variables).
    pub fn millis(
        &self,
        name: &'static str,
        default: Duration,
        bounds: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .number_opt(name, bounds)?
            .map_or(default, Duration::from_millis))
    }

    /// A whole number of seconds within `bounds` (for `…_S` variables).
    pub fn seconds(
        &self,
        name: &'static str,
        default: Duration,
        bounds: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .number_opt(name, bounds)?
            .map_or(default, Duration::from_secs))
    }

    fn number_opt(
        &self,
        name: &'static str,
        bounds: RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        self.value(name, |text| match text.parse::<u64>() {
            Ok(n) if bounds.contains(&n) => Ok(n),
            _ => Err(format!(
                "{text:?} is not a whole number between {} and {}",
                bounds.start(),
                bounds.end()
            )),
        })
    }

    /// A duration in seconds: a plain number (`300`), or with an `s`, `ms`
    /// or `m` suffix (`300s`, `500ms`, `5m`); or `default`.
    pub fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.value(name, parse_duration)?.unwrap_or(default))
    }

    /// A positive byte count: a plain number or with a `K`/`KB`/`KiB` or
    /// `M`/`MB`/`MiB` suffix (all powers of 1024); or `default`.
    pub fn bytes(&self, name: &'static str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.value(name, parse_bytes)?.unwrap_or(default))
    }

    /// One of the named `choices`, spelled exactly, or `default`. Several
    /// names may stand for one value (aliases).
    pub fn one_of<T: Clone>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        self.choice(name, choices, default, |choice, text| choice == text)
    }

    /// [`Env::one_of`], compared without regard to ASCII case (`LOG_LEVEL`,
    /// whose seeds spell the levels in upper case; yes/no settings).
    pub fn one_of_any_case<T: Clone>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        self.choice(name, choices, default, |choice, text| {
            choice.eq_ignore_ascii_case(text)
        })
    }

    fn choice<T: Clone>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
        default: T,
        matches: impl Fn(&str, &str) -> bool,
    ) -> Result<T, ConfigError> {
        Ok(self
            .value(name, |text| {
                choices
                    .iter()
                    .find(|(choice, _)| matches(choice, text))
                    .map(|(_, value)| value.clone())
                    .ok_or_else(|| {
                        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                        format!("{text:?} is not one of {}", names.join(", "))
                    })
            })?
            .unwrap_or(default))
    }

    /// A yes/no setting: true, false, 1, 0, yes, no, on, off (any case).
    pub fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.one_of_any_case(
            name,
            &[
                ("true", true),
                ("false", false),
                ("1", true),
                ("0", false),
                ("yes", true),
                ("no", false),
                ("on", true),
                ("off", false),
            ],
            default,
        )
    }

    /// A URL that starts with one of `schemes` (e.g. `["redis://", "rediss://"]`).
    pub fn url(&self, name: &'static str, schemes: &[&str]) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            Some(url) if !schemes.iter().any(|s| url.starts_with(s)) => Err(ConfigError::new(
                name,
                format!("must start with {}", schemes.join(" or ")),
            )),
            other => Ok(other),
        }
    }

    /// The path of a file that exists.
    pub fn file(&self, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        self.value(name, |text| {
            let path = PathBuf::from(text);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("file {} does not exist", path.display()))
            }
        })
    }
}

/// Parses seconds: a plain number, or with an `s`/`ms`/`m` suffix.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration in seconds (e.g. 300 or 300s)");
    let (number, scale_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1000)
    };
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(
        n.checked_mul(scale_ms).ok_or_else(bad)?,
    ))
}

/// Parses a byte count: a plain number or with a KiB/MiB/KB/MB suffix.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{text:?} is not a byte count (e.g. 1048576 or 1MiB)"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive byte count"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env<'static> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn blank_is_unset() {
        let e = env(&[("A", "  "), ("B", ""), ("C", " x ")]);
        assert_eq!(e.get("A"), None);
        assert_eq!(e.get("B"), None);
        assert_eq!(e.get("C").as_deref(), Some(" x "));
        assert_eq!(e.require("A").unwrap_err().variable, "A");
        assert_eq!(e.number("A", 7u32, 1..=9).unwrap(), 7);
    }

    #[test]
    fn numbers_and_durations_keep_to_their_bounds() {
        let e = env(&[("N", " 5 "), ("BIG", "50"), ("NEG", "-1"), ("MS", "250")]);
        assert_eq!(e.number("N", 1u32, 1..=10).unwrap(), 5);
        let err = e.number("BIG", 1u32, 1..=10).unwrap_err();
        assert_eq!(err.variable, "BIG");
        assert!(err.reason.contains("between 1 and 10"), "{}", err.reason);
        assert_eq!(e.number("NEG", 1u64, 0..=10).unwrap_err().variable, "NEG");
        assert_eq!(
            e.millis("MS", Duration::ZERO, 1..=1000).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            e.seconds("N", Duration::ZERO, 1..=10).unwrap(),
            Duration::from_secs(5)
        );
        assert!(e.seconds("BIG", Duration::ZERO, 1..=10).is_err());
    }

    #[test]
    fn durations_and_bytes_take_units() {
        let e = env(&[
            ("A", "300"),
            ("B", "500ms"),
            ("C", "2m"),
            ("D", "10s"),
            ("E", "soon"),
            ("K", "4KiB"),
            ("M", "2MB"),
            ("Z", "0"),
            ("X", "lots"),
        ]);
        let d = |name| e.duration(name, Duration::ZERO);
        assert_eq!(d("A").unwrap(), Duration::from_secs(300));
        assert_eq!(d("B").unwrap(), Duration::from_millis(500));
        assert_eq!(d("C").unwrap(), Duration::from_secs(120));
        assert_eq!(d("D").unwrap(), Duration::from_secs(10));
        assert_eq!(d("E").unwrap_err().variable, "E");
        assert_eq!(d("UNSET").unwrap(), Duration::ZERO);
        assert_eq!(e.bytes("K", 1).unwrap(), 4096);
        assert_eq!(e.bytes("M", 1).unwrap(), 2 * 1024 * 1024);
        assert_eq!(e.bytes("Z", 1).unwrap_err().variable, "Z");
        assert_eq!(e.bytes("X", 1).unwrap_err().variable, "X");
    }

    #[test]
    fn choices_list_the_names_and_ignore_case_only_when_asked() {
        let e = env(&[("MODE", "FAST"), ("BAD", "medium"), ("FLAG", "Yes")]);
        let choices = [("fast", 1), ("slow", 2)];
        assert_eq!(e.one_of_any_case("MODE", &choices, 0).unwrap(), 1);
        assert_eq!(e.one_of("MODE", &choices, 0).unwrap_err().variable, "MODE");
        assert_eq!(e.one_of("UNSET", &choices, 0).unwrap(), 0);
        let err = e.one_of("BAD", &choices, 0).unwrap_err();
        assert_eq!(err.variable, "BAD");
        assert_eq!(err.reason, "\"medium\" is not one of fast, slow");
        assert!(e.bool("FLAG", false).unwrap());
        assert!(e.bool("MODE", false).is_err());
    }

    #[test]
    fn parse_uses_from_str() {
        let e = env(&[("ADDR", "0.0.0.0:80"), ("BAD", "localhost")]);
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        assert_eq!(
            e.parse("ADDR", default, "a socket address").unwrap(),
            std::net::SocketAddr::from(([0, 0, 0, 0], 80))
        );
        let err = e.parse("BAD", default, "a socket address").unwrap_err();
        assert_eq!(err.reason, "\"localhost\" is not a socket address");
    }

    #[test]
    fn secrets_may_come_from_files() {
        let dir = std::env::temp_dir().join(format!("ymera-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let path = file.display().to_string();
        let empty_path = empty.display().to_string();
        let e = env(&[
            ("DIRECT", "given"),
            ("DIRECT_FILE", &path),
            ("TOKEN_FILE", &path),
            ("EMPTY_FILE", &empty_path),
            ("GONE_FILE", "/nonexistent/ymera-secret"),
        ]);
        assert_eq!(e.secret("DIRECT").unwrap().as_deref(), Some("given"));
        assert_eq!(e.secret("TOKEN").unwrap().as_deref(), Some("s3cret"));
        assert_eq!(e.secret("UNSET").unwrap(), None);
        let err = e.secret("GONE").unwrap_err();
        assert_eq!(err.variable, "GONE");
        assert!(err.reason.contains("GONE_FILE"), "{}", err.reason);
        assert_eq!(e.secret("EMPTY").unwrap_err().variable, "EMPTY");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
