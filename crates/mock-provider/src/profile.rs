//! Fault injection: profiles of rules that make the simulator fail the way real providers do —
//! error statuses at a rate, slow or variable latency, hangs, streams cut mid-way or paced
//! slowly, malformed bodies, wrong content types.
//!
//! A profile is chosen by name (`--profile flaky`), read from a TOML or JSON file
//! (`--profile faults.toml`), or replaced at run time with `PUT /_mock/profile`. For each
//! request the first matching rule whose dice roll hits applies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One way to misbehave. Filters (`path`, `model`) and `rate` decide whether it applies;
/// the other fields say what happens, and combine (a delay and then a 500, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Only requests whose path contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only requests for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Share of matching requests it applies to, 0–1.
    #[serde(default = "always")]
    pub rate: f64,
    /// Answer with this status, in the called format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Seconds, sent as `Retry-After` with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extra delay before the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Never answer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hang: bool,
    /// Streams: send this many events, then drop the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_after: Option<usize>,
    /// Streams: this long between events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_chunk_ms: Option<u64>,
    /// A body that is not the JSON it claims to be (streams: a broken event).
    #[serde(default, skip_serializing_if = "is_false")]
    pub malformed: bool,
    /// An HTML error page with status 200, as a misconfigured proxy sends.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wrong_content_type: bool,
}

fn always() -> f64 {
    1.0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A delay: fixed, uniform between two bounds, or normal around a mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Latency {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
    Normal { mean: u64, stddev: u64 },
}

impl Latency {
    /// A sample; `random` and `other` uniform in [0, 1).
    pub fn sample(&self, random: f64, other: f64) -> Duration {
        let millis = match self {
            Latency::Fixed(ms) => *ms as f64,
            Latency::Uniform { min, max } => {
                *min as f64 + (max.saturating_sub(*min) as f64) * random
            }
            Latency::Normal { mean, stddev } => {
                // Box–Muller.
                let radius = (-2.0 * (1.0 - random).max(f64::MIN_POSITIVE).ln()).sqrt();
                *mean as f64 + *stddev as f64 * radius * (std::f64::consts::TAU * other).cos()
            }
        };
        Duration::from_secs_f64(millis.max(0.0) / 1000.0)
    }
}

impl Rule {
    fn blank() -> Rule {
        Rule {
            path: None,
            model: None,
            rate: 1.0,
            status: None,
            retry_after: None,
            message: None,
            latency_ms: None,
            hang: false,
            disconnect_after: None,
            slow_chunk_ms: None,
            malformed: false,
            wrong_content_type: false,
        }
    }

    pub fn matches(&self, path: &str, model: Option<&str>) -> bool {
        self.path.as_deref().is_none_or(|p| path.contains(p))
            && self.model.as_deref().is_none_or(|m| model == Some(m))
    }
}

/// The built-in profiles, by name.
pub fn named(name: &str) -> Option<Profile> {
    let rule = |change: &dyn Fn(&mut Rule)| {
        let mut rule = Rule::blank();
        change(&mut rule);
        rule
    };
    let rules = match name {
        "healthy" => Vec::new(),
        "flaky" => vec![rule(&|r| {
            r.rate = 0.1;
            r.status = Some(500);
        })],
        "half-failing" => vec![rule(&|r| {
            r.rate = 0.5;
            r.status = Some(500);
        })],
        "failing" => vec![rule(&|r| r.status = Some(500))],
        "down" => vec![rule(&|r| r.status = Some(503))],
        "throttled" => vec![rule(&|r| {
            r.status = Some(429);
            r.retry_after = Some(2);
        })],
        "slow" => vec![rule(&|r| r.latency_ms = Some(Latency::Fixed(200)))],
        "jittery" => vec![rule(&|r| {
            r.latency_ms = Some(Latency::Normal {
                mean: 100,
                stddev: 50,
            })
        })],
        "hang" => vec![rule(&|r| r.hang = true)],
        "cut" => vec![rule(&|r| r.disconnect_after = Some(3))],
        "slow-stream" => vec![rule(&|r| r.slow_chunk_ms = Some(200))],
        "malformed" => vec![rule(&|r| r.malformed = true)],
        "html" => vec![rule(&|r| r.wrong_content_type = true)],
        _ => return None,
    };
    Some(Profile {
        name: Some(name.to_owned()),
        rules,
    })
}

/// Names of the built-in profiles, for help texts.
pub const NAMES: &[&str] = &[
    "healthy",
    "flaky",
    "half-failing",
    "failing",
    "down",
    "throttled",
    "slow",
    "jittery",
    "hang",
    "cut",
    "slow-stream",
    "malformed",
    "html",
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("`{0}` is neither a built-in profile ({names}) nor a readable file", names = NAMES.join(", "))]
    Unknown(String),
    #[error("{path} is not a valid profile: {message}")]
    Invalid { path: String, message: String },
}

impl Profile {
    /// A built-in profile by name, or a TOML/JSON file.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some(profile) = named(name_or_path) {
            return Ok(profile);
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|_| ProfileError::Unknown(name_or_path.to_owned()))?;
        let invalid = |message: String| ProfileError::Invalid {
            path: name_or_path.to_owned(),
            message,
        };
        let mut profile: Profile = if name_or_path.ends_with(".json") {
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        profile.validate().map_err(invalid)?;
        profile.name.get_or_insert_with(|| name_or_path.to_owned());
        Ok(profile)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (index, rule) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.rate) {
                return Err(format!("rules[{index}].rate must be between 0 and 1"));
            }
            if rule.status.is_some_and(|s| !(400..=599).contains(&s)) {
                return Err(format!("rules[{index}].status must be 400..599"));
            }
        }
        Ok(())
    }

    /// The first matching rule whose roll (uniform in [0, 1)) falls under its rate.
    pub fn pick(&self, path: &str, model: Option<&str>, roll: f64) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.matches(path, model) && roll < rule.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_profile_loads_and_files_parse() {
        for name in NAMES {
            assert!(Profile::load(name).is_ok(), "{name}");
        }
        let dir = std::env::temp_dir().join(format!("mock-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("p.toml");
        std::fs::write(
            &toml_path,
            "[[rules]]\npath = \"/v1/messages\"\nrate = 0.25\nstatus = 529\n\n[[rules]]\nlatency_ms = { min = 10, max = 20 }\n",
        )
        .unwrap();
        let profile = Profile::load(toml_path.to_str().unwrap()).unwrap();
        assert_eq!(profile.rules.len(), 2);
        assert_eq!(
            profile.rules[1].latency_ms,
            Some(Latency::Uniform { min: 10, max: 20 })
        );
        assert_eq!(
            profile.pick("/v1/messages", None, 0.2).unwrap().status,
            Some(529)
        );
        assert!(
            profile
                .pick("/v1/messages", None, 0.3)
                .unwrap()
                .status
                .is_none()
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"rules": [{"status": 200}]}"#).unwrap();
        assert!(Profile::load(bad.to_str().unwrap()).is_err());
        assert!(Profile::load("no-such-profile").is_err());
    }

    #[test]
    fn latency_samples_follow_their_distribution() {
        assert_eq!(
            Latency::Fixed(200).sample(0.9, 0.1),
            Duration::from_millis(200)
        );
        assert_eq!(
            Latency::Uniform { min: 100, max: 300 }.sample(0.5, 0.0),
            Duration::from_millis(200)
        );
        let normal = Latency::Normal {
            mean: 100,
            stddev: 10,
        };
        assert!(normal.sample(0.5, 0.25).as_millis().abs_diff(100) <= 1);
    }
}
