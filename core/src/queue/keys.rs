//! Every Redis key mcpq uses, in one place.
//!
//! A namespace `ns` is split into `partitions` (`[redis] partitions`, default 1): the
//! keys of partition 0 start with `{ns}:`, those of partition `p` with `{ns~p}:`. The
//! braces are a Redis Cluster hash tag, so each partition lives in one slot (partitions
//! land on different nodes) and a Lua script ([`super::scripts`]), given its partition's
//! prefix as `KEYS[1]`, may touch any key of it. A job, its attempts, its batch and its
//! webhook deliveries live in the partition its id names ([`super::partition`]); the
//! queues, leases, retries and dead letters are per partition too. What the whole
//! namespace shares (workers, server reports, tool catalog, rate limits, schedules,
//! the partition count, the pub/sub channels) lives under `{ns}` whatever the
//! partition. The scripts build the same names from the prefix; `lua/common.lua` is the
//! other place that knows them.

use crate::job::Priority;

/// Key names for one partition of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    /// `{ns}`: the shared keys' prefix.
    base: String,
    /// This partition's prefix: `{ns}` for 0, `{ns~p}` otherwise.
    prefix: String,
    partition: u16,
    partitions: u16,
}

impl Keys {
    /// Keys under `namespace`, in one partition (partition 0 of 1).
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let base = format!("{{{namespace}}}");
        Keys {
            prefix: base.clone(),
            base,
            namespace,
            partition: 0,
            partitions: 1,
        }
    }

    /// The same namespace split into `partitions` (at least 1); this is partition 0.
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self.at(0)
    }

    /// How many partitions the namespace has.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Which partition these keys name.
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// The keys of partition `p` (taken modulo the count).
    pub fn at(&self, p: u16) -> Keys {
        let p = p % self.partitions;
        Keys {
            namespace: self.namespace.clone(),
            base: self.base.clone(),
            prefix: if p == 0 {
                self.base.clone()
            } else {
                format!("{{{}~{p}}}", self.namespace)
            },
            partition: p,
            partitions: self.partitions,
        }
    }

    /// Every partition's keys, 0 first.
    pub fn all(&self) -> impl Iterator<Item = Keys> + '_ {
        (0..self.partitions).map(|p| self.at(p))
    }

    /// The keys of the partition job (or batch) `id` lives in ([`super::partition::of_id`]).
    pub fn for_job(&self, id: &str) -> Keys {
        self.at(super::partition::of_id(id, self.partitions))
    }

    /// The keys of the partition webhook delivery `id` lives in: its subject's
    /// (`job-ID-N` or `batch-ID-N`, made by `lua/common.lua`'s `webhook_create`).
    pub fn for_webhook(&self, id: &str) -> Keys {
        self.for_job(id.split('-').nth(1).unwrap_or(id))
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This partition's prefix, `{ns}` or `{ns~p}`: what its keys start with; `KEYS[1]`
    /// (and `ARGV[1]`) of every script.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `KEYS[1]` of every script: the prefix and its colon, `{ns}:` (every key of the
    /// partition starts with it, so ACLs written as `~{ns}:*` allow it, and a cluster
    /// routes the script by its hash tag).
    pub fn script_key(&self) -> String {
        format!("{}:", self.prefix)
    }

    /// Where the partition count is kept (`{ns}:partitions`; [`super::partition::agree`]).
    pub fn partitions_key(&self) -> String {
        format!("{}:partitions", self.base)
    }

    /// Hash with one job's status, payload, attempts, timestamps, result or error.
    /// Takes any string: a malformed queue entry is dead-lettered under its own name.
    /// Always in the partition `id` names, whichever partition these keys are of.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.for_job(id).prefix)
    }

    /// [`Keys::job`] for an id read as raw bytes (a member someone else wrote into a
    /// set may not be UTF-8, and must still be reachable to be shown or removed).
    /// Unlike [`Keys::job`], in *this* partition: an entry found in one of its sets
    /// is read where it was found.
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
        format!("{}:job:{id}:attempts", self.for_job(id).prefix)
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

    /// Hash of the jobs ended since the namespace began, by outcome (`succeeded`,
    /// `retried`, `dead`, `released`; `lua/common.lua`'s `add_totals`).
    pub fn totals(&self) -> String {
        format!("{}:totals", self.prefix)
    }

    /// Hash of the jobs that ended in minute `minute` (ms / 60,000, Redis's clock), per
    /// outcome and 10-second slot (`lua/common.lua`'s `add_totals`; `queue::history`).
    pub fn ended(&self, minute: u64) -> String {
        format!("{}:ended:{minute}", self.prefix)
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
        format!("{}:limit:{endpoint}", self.base)
    }

    /// Hash of the cron schedules' last fired ticks, one field per schedule name
    /// (`lua/schedule_mark.lua`).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.base)
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
        format!("{}:batch:{id}", self.for_job(id).prefix)
    }

    /// List of one batch's job ids, in input order.
    pub fn batch_jobs(&self, id: &str) -> String {
        format!("{}:batch:{id}:jobs", self.for_job(id).prefix)
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
        format!("{}:cancel", self.base)
    }

    /// Pub/sub channel on which the scripts say that jobs became ready (enqueued,
    /// promoted, released): idle workers fetch at once instead of at their next poll.
    pub fn wake_channel(&self) -> String {
        format!("{}:wake", self.base)
    }

    /// Pub/sub channel carrying `ID STATUS` of every job that has just ended (succeeded,
    /// dead or cancelled), published by the script that ended it: what
    /// [`super::notify::Endings`] waits on.
    pub fn ended_channel(&self) -> String {
        format!("{}:ended", self.base)
    }

    /// Hash of the workers' reports on their MCP servers, by server name.
    pub fn servers(&self) -> String {
        format!("{}:servers", self.base)
    }

    /// Hash of one worker's own server reports (`queue::servers`), one field per server;
    /// it expires when the worker stops reporting.
    pub fn servers_of(&self, worker: &str) -> String {
        format!("{}:servers:worker:{worker}", self.base)
    }

    /// Hash of the tool listings of the servers the MCP front exposes, by server name
    /// ([`super::tool_catalog`]).
    pub fn tool_catalog(&self) -> String {
        format!("{}:tools", self.base)
    }

    /// Pub/sub channel carrying `ID JSON`: a running job's newest progress report
    /// ([`super::progress`]).
    pub fn progress_channel(&self) -> String {
        format!("{}:progress", self.base)
    }

    /// Pub/sub channel carrying a server's name when its tool listing changed.
    pub fn tools_changed_channel(&self) -> String {
        format!("{}:tools_changed", self.base)
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
        format!("{}:workers", self.base)
    }

    /// Pattern matching every key of this partition (for tests and clean-up tools);
    /// partition 0's is the shared keys' too.
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

    #[test]
    fn partitions_have_their_own_hash_tags_and_share_the_namespace_keys() {
        let k = Keys::new("t1").with_partitions(4);
        let p3 = k.at(3);
        assert_eq!(p3.prefix(), "{t1~3}");
        assert_eq!(p3.ready(Priority::Low), "{t1~3}:ready:low");
        assert_eq!(p3.workers(), "{t1}:workers");
        assert_eq!(p3.limit("llm"), "{t1}:limit:llm");
        assert_eq!(p3.ended_channel(), "{t1}:ended");
        assert_eq!(k.at(0).prefix(), "{t1}");
        assert_eq!(k.at(7).partition(), 3);
        assert_eq!(k.all().count(), 4);
        assert_eq!(Keys::new("t1").for_job("anything").prefix(), "{t1}");
    }
}
