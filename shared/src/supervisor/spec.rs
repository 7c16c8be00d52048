//! `SpawnSpec`: everything the supervisor needs to start one child, and nothing else.
//!
//! Callers build it from whatever they know (a configured server: `mcp::spawn_spec`; the
//! template sandbox: its own program); the supervisor never reads the config. It
//! guarantees:
//! - The child's environment is [`super::INHERITED_ENV`] read from the worker at spawn
//!   time, then the spec's own `env` (which wins on a clash), and nothing else: a spec
//!   cannot carry the worker's whole environment (promise 2 of [`super`]).
//! - `name` is what logs, errors and the live-process table call the child; `command` is
//!   quoted as given in spawn errors.
//! - `kill_grace` is the wait between SIGTERM and SIGKILL in [`super::ServerProcess::stop`].

use std::path::PathBuf;
use std::time::Duration;

/// How to start one child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// What logs and errors call it (a server's name, `template-sandbox`).
    pub name: String,
    /// Program to run, looked up in `PATH` when it has no `/`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set on top of [`super::INHERITED_ENV`], in order (a later one wins).
    pub env: Vec<(String, String)>,
    /// Working directory (none: the worker's).
    pub cwd: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when it is stopped.
    pub kill_grace: Duration,
}

impl SpawnSpec {
    /// `command` with no arguments, no extra environment, the worker's directory and no
    /// kill grace; set the rest with struct update or the fields.
    pub fn new(name: impl Into<String>, command: impl Into<String>) -> Self {
        SpawnSpec {
            name: name.into(),
            command: command.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            kill_grace: Duration::ZERO,
        }
    }
}
