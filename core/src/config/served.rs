//! `[worker] queues` / `mcpq-worker --queues`: the named queues a worker serves, each
//! with its weight (`emails:3,agents:1`). How the weights are used is in
//! [`crate::queue::queues`]; the names follow [`crate::job::queue_name`].

use std::fmt;
use std::str::FromStr;

use crate::job::{queue_name_problem, DEFAULT_QUEUE};

/// Most queues one worker serves.
pub const MAX_SERVED: usize = 32;

/// Largest weight of one served queue.
pub const MAX_WEIGHT: u32 = 1000;

/// The queues a worker serves, each with its weight, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    queues: Vec<(String, u32)>,
}

impl Default for Served {
    /// The default queue alone.
    fn default() -> Self {
        Served {
            queues: vec![(DEFAULT_QUEUE.to_string(), 1)],
        }
    }
}

impl Served {
    /// The queues and their weights, in the order given.
    pub fn queues(&self) -> &[(String, u32)] {
        &self.queues
    }

    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.queues.iter().map(|(_, w)| w).sum()
    }

    /// Whether the worker serves `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|(q, _)| q == queue)
    }
}

/// Reads `emails:3,agents:1` (a missing weight is 1): names by
/// [`crate::job::queue_name`]'s rule, weights 1 to [`MAX_WEIGHT`], at most
/// [`MAX_SERVED`] queues, none twice.
impl FromStr for Served {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut queues: Vec<(String, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (name, weight) = match part.split_once(':') {
                Some((name, weight)) => {
                    let weight = weight
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=MAX_WEIGHT).contains(w))
                        .ok_or_else(|| {
                            format!(
                            "queue `{}`: the weight must be a whole number from 1 to {MAX_WEIGHT}",
                            crate::terminal::one_line(&name.chars().take(80).collect::<String>())
                        )
                        })?;
                    (name.trim(), weight)
                }
                None => (part, 1),
            };
            if let Some(problem) = queue_name_problem(name) {
                return Err(format!(
                    "queue name {:?}: {problem} (give NAME or NAME:WEIGHT, comma-separated)",
                    crate::terminal::one_line(&name.chars().take(80).collect::<String>())
                ));
            }
            if queues.iter().any(|(q, _)| q == name) {
                return Err(format!("queue `{name}` is given twice")); // a valid name: plain
            }
            queues.push((name.to_string(), weight));
        }
        if queues.len() > MAX_SERVED {
            return Err(format!("at most {MAX_SERVED} queues per worker"));
        }
        Ok(Served { queues })
    }
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .queues
            .iter()
            .map(|(q, w)| format!("{q}:{w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_queues_read_names_and_weights() {
        let s: Served = "emails:3, agents:1,misc".parse().expect("parse");
        assert_eq!(
            s.queues(),
            &[
                ("emails".to_string(), 3),
                ("agents".to_string(), 1),
                ("misc".to_string(), 1)
            ]
        );
        assert_eq!(s.total(), 5);
        assert_eq!(s.to_string(), "emails:3,agents:1,misc:1");
        assert!(s.serves("agents") && !s.serves("default"));
        assert_eq!(Served::default().to_string(), "default:1");
    }

    #[test]
    fn bad_served_queues_are_refused_with_a_reason() {
        for (spec, says) in [
            ("", "must not be empty"),
            ("a:0", "weight"),
            ("a:x", "weight"),
            ("a:1001", "weight"),
            ("a,a", "twice"),
            ("a b", "ASCII"),
            ("a::2", "weight"),
        ] {
            let e = spec.parse::<Served>().expect_err(spec);
            assert!(e.contains(says), "{spec}: {e}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("q{i}")).collect();
        assert!(many.join(",").parse::<Served>().is_err());
    }
}
