//! From the config to the supervisor: the one place a configured server becomes a
//! [`SpawnSpec`] and `[defaults]` become a [`HealthPolicy`], so the supervisor (a lower
//! layer) never reads the config.
//!
//! Guarantees: a server starts with exactly its configured `command`, `args`, `env` (in
//! key order, on top of the supervisor's inherited variables), `cwd` and effective
//! `kill_grace`; the crash policy is exactly the `[defaults]` values.

use std::time::Duration;

use crate::config::{Defaults, ServerConfig};
use crate::supervisor::{HealthPolicy, SpawnSpec};

/// How to start stdio server `name` configured as `config`, stopped with `kill_grace`
/// (its effective one: `Config::timeouts(config).kill_grace`).
pub fn spawn_spec(name: &str, config: &ServerConfig, kill_grace: Duration) -> SpawnSpec {
    SpawnSpec {
        args: config.args.clone(),
        env: config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: config.cwd.clone(),
        kill_grace,
        ..SpawnSpec::new(name, config.command.clone())
    }
}

/// The crash policy set in the config's `[defaults]`.
pub fn health_policy(defaults: &Defaults) -> HealthPolicy {
    HealthPolicy {
        restart_backoff: defaults.restart_backoff,
        restart_backoff_max: defaults.restart_backoff_max,
        crash_loop_threshold: defaults.crash_loop_threshold,
        crash_loop_window: defaults.crash_loop_window,
        unhealthy_for: defaults.unhealthy_for,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_servers_spec_is_its_config() {
        let config = ServerConfig {
            command: "srv".to_string(),
            args: vec!["-v".to_string()],
            env: BTreeMap::from([
                ("B".to_string(), "2".to_string()),
                ("A".to_string(), "1".to_string()),
            ]),
            cwd: Some(PathBuf::from("/tmp")),
            ..ServerConfig::default()
        };
        let spec = spawn_spec("echo", &config, Duration::from_secs(3));
        assert_eq!(spec.name, "echo");
        assert_eq!(spec.command, "srv");
        assert_eq!(spec.args, vec!["-v"]);
        assert_eq!(
            spec.env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(spec.kill_grace, Duration::from_secs(3));
    }

    #[test]
    fn the_supervisors_default_policy_is_the_configs_default() {
        assert_eq!(health_policy(&Defaults::default()), HealthPolicy::default());
    }
}
