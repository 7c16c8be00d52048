//! Every Redis key mcpq uses, in one place.
//!
//! All keys start with `<namespace>:`. apalis-redis derives its own keys from the queue
//! name [`Keys::queue`] (`<namespace>:queue:active`, `...:inflight`, `...:data`, ...).

use crate::job::JobId;

/// Key names for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    /// Keys under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Keys {
            namespace: namespace.into(),
        }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The apalis-redis queue name; apalis appends its own suffixes.
    pub fn queue(&self) -> String {
        format!("{}:queue", self.namespace)
    }

    /// Hash with one job's status, timestamps, result or error.
    pub fn job(&self, id: &JobId) -> String {
        format!("{}:job:{id}", self.namespace)
    }

    /// Hash of the workers' reports on their MCP servers, by server name.
    pub fn servers(&self) -> String {
        format!("{}:servers", self.namespace)
    }

    /// Pattern matching every key of this namespace (for tests and clean-up tools).
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_namespace() {
        let k = Keys::new("t1");
        let id: JobId = "01JDX6Q6T3N7Z8YV1K0W2M4C5B".parse().expect("valid id");
        assert_eq!(k.queue(), "t1:queue");
        assert_eq!(k.job(&id), "t1:job:01JDX6Q6T3N7Z8YV1K0W2M4C5B");
        assert!(k.job(&id).starts_with(&k.all_pattern()[..3]));
    }
}
