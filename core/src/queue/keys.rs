//! Every Redis key mcpq uses, in one place.
//!
//! All keys of a namespace `ns` start with `{ns}:`; the braces are a Redis Cluster hash
//! tag, so one namespace lives in one slot and the Lua scripts ([`super::scripts`]) may
//! touch any of its keys. The scripts build the same names from the prefix
//! ([`Keys::prefix`]); `lua/common.lua` is the other place that knows them.

use crate::job::Priority;

/// Key names for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    prefix: String,
}

impl Keys {
    /// Keys under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Keys {
            prefix: format!("{{{namespace}}}"),
            namespace,
        }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}`: what every key starts with; the first argument of every script.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash with one job's status, payload, attempts, timestamps, result or error.
    /// Takes any string: a malformed queue entry is dead-lettered under its own name.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    /// [`Keys::job`] for an id read as raw bytes (a member someone else wrote into a
    /// set may not be UTF-8, and must still be reachable to be shown or removed).
    pub fn job_raw(&self, id: &[u8]) -> Vec<u8> {
        let mut key = format!("{}:job:", self.prefix).into_bytes();
        key.extend_from_slice(id);
        key
    }

    /// [`Keys::attempts`] for an id read as raw bytes (see [`Keys::job_raw`]).
    pub fn attempts_raw(&self, id: &[u8]) -> Vec<u8> {
        let mut key = self.job_raw(id);
        key.extend_from_slice(b":attempts");
        key
    }

    /// List of one job's attempt records (JSON), oldest first.
    pub fn attempts(&self, id: &str) -> String {
        format!("{}:job:{id}:attempts", self.prefix)
    }

    /// List of ids waiting for a worker at `priority` (workers pop from the right).
    pub fn ready(&self, priority: Priority) -> String {
        format!("{}:ready:{}", self.prefix, priority.as_str())
    }

    /// List of ids waiting in named queue `queue` at `priority`; the default queue's
    /// are [`Keys::ready`] (the names they had before queues had names).
    pub fn ready_in(&self, queue: &str, priority: Priority) -> String {
        if queue == crate::job::DEFAULT_QUEUE {
            return self.ready(priority);
        }
        format!("{}:queue:{queue}:{}", self.prefix, priority.as_str())
    }

    /// Set of the named queues jobs were submitted to (`lua/enqueue.lua`; at most
    /// [`super::queues::MAX_QUEUES`]).
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// Set of the paused queues' names: no worker fetches from them.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.prefix)
    }

    /// Sorted set of ids waiting for their time, by due time (ms): failed jobs waiting
    /// for a retry and delayed jobs (`options.run_at`, status `scheduled`).
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.prefix)
    }

    /// The prefix of one rate-limited endpoint's keys (`ENDPOINT` is `server:NAME` or
    /// `llm`): `…:calls` (sorted set: calls admitted, by time), `…:holders` (sorted
    /// set: concurrency slots, by expiry), `…:state` (hash: `paused_until`,
    /// `tokens_tat`). Written by `lua/limit_*.lua` (see `queue::limits`).
    pub fn limit(&self, endpoint: &str) -> String {
        format!("{}:limit:{endpoint}", self.prefix)
    }

    /// Hash of the cron schedules' last fired ticks, one field per schedule name
    /// (`lua/schedule_mark.lua`).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.prefix)
    }

    /// Sorted set of running ids, by lease expiry (ms).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.prefix)
    }

    /// List of rescued ids (suspects), each to run alone on an idle worker, oldest
    /// first (`lua/rescue.lua`, `lua/fetch.lua`).
    pub fn suspects(&self) -> String {
        format!("{}:suspects", self.prefix)
    }

    /// Sorted set of dead ids, by time of death (ms).
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// The job id an idempotency key was first used for.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// Hash of one batch: its counts (total, pending, succeeded, dead, cancelled), times,
    /// source, fingerprint and fan-in job (`lua/batch_create.lua`).
    pub fn batch(&self, id: &str) -> String {
        format!("{}:batch:{id}", self.prefix)
    }

    /// List of one batch's job ids, in input order.
    pub fn batch_jobs(&self, id: &str) -> String {
        format!("{}:batch:{id}:jobs", self.prefix)
    }

    /// Sorted set of every job id, by submit time (ms), trimmed to the retention
    /// (`lua/enqueue.lua`): what `mcpq jobs` lists.
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// Sorted set of batch ids, by creation time (ms).
    pub fn batches(&self) -> String {
        format!("{}:batches", self.prefix)
    }

    /// Pub/sub channel carrying the ids of running jobs to cancel.
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// Pub/sub channel carrying `ID STATUS` of every job that has just ended (succeeded,
    /// dead or cancelled), published by the script that ended it: what
    /// [`super::notify::Endings`] waits on.
    pub fn ended_channel(&self) -> String {
        format!("{}:ended", self.prefix)
    }

    /// Hash of the workers' reports on their MCP servers, by server name.
    pub fn servers(&self) -> String {
        format!("{}:servers", self.prefix)
    }

    /// Hash of the tool listings of the servers the MCP front exposes, by server name
    /// ([`super::tool_catalog`]).
    pub fn tool_catalog(&self) -> String {
        format!("{}:tools", self.prefix)
    }

    /// Pub/sub channel carrying `ID JSON`: a running job's newest progress report
    /// ([`super::progress`]).
    pub fn progress_channel(&self) -> String {
        format!("{}:progress", self.prefix)
    }

    /// Pub/sub channel carrying a server's name when its tool listing changed.
    pub fn tools_changed_channel(&self) -> String {
        format!("{}:tools_changed", self.prefix)
    }

    /// Hash of one webhook delivery: what it announces (type, subject, status), its
    /// callback, state, attempts and last answer (`lua/common.lua`'s `webhook_create`).
    pub fn webhook(&self, id: &str) -> String {
        format!("{}:webhook:{id}", self.prefix)
    }

    /// Sorted set of pending webhook deliveries, by due time (ms); a claimed one is
    /// pushed a lease ahead.
    pub fn webhooks_due(&self) -> String {
        format!("{}:webhooks:due", self.prefix)
    }

    /// Sorted set of every webhook delivery by creation time (ms), trimmed to
    /// `webhooks.retention`: what `mcpq webhooks list` lists.
    pub fn webhooks(&self) -> String {
        format!("{}:webhooks", self.prefix)
    }

    /// Sorted set of failed webhook deliveries, by time of failure (ms).
    pub fn webhooks_failed(&self) -> String {
        format!("{}:webhooks:failed", self.prefix)
    }

    /// The token of a serial endpoint: the delivery sending to it now (expires with its
    /// lease).
    pub fn webhook_busy(&self, endpoint: &str) -> String {
        format!("{}:webhooks:busy:{endpoint}", self.prefix)
    }

    /// Hash of the live workers' heartbeats, by worker id (`lua/heartbeat.lua`).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Pattern matching every key of this namespace (for tests and clean-up tools).
    pub fn all_pattern(&self) -> String {
        // `{` and `}` are not glob characters; `[` would be, and namespaces cannot
        // contain it (Config::validate).
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_namespace_hash_tag() {
        let k = Keys::new("t1");
        let id = "01JDX6Q6T3N7Z8YV1K0W2M4C5B";
        assert_eq!(k.job(id), "{t1}:job:01JDX6Q6T3N7Z8YV1K0W2M4C5B");
        assert_eq!(k.ready(Priority::High), "{t1}:ready:high");
        for key in [
            k.job(id),
            k.attempts(id),
            k.scheduled(),
            k.schedules(),
            k.leases(),
            k.dead(),
        ] {
            assert!(key.starts_with("{t1}:"), "{key}");
        }
        assert_eq!(k.all_pattern(), "{t1}:*");
    }
}
