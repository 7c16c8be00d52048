//! Partitions: a namespace's queues spread over several hash tags ([`super::Keys::at`]),
//! so that a Redis Cluster can put them on different nodes.
//!
//! A job lives in the partition its **id** names: bits 65..80 of the ULID (the top of
//! its random part), modulo the partition count ([`of_id`]). So every operation on a
//! job by id finds its partition without asking Redis. A producer picks the partition
//! of a job whose id it made itself ([`place`]): the idempotency key's ([`of_key`]) when
//! the job has one, so that every submit with one key meets the first in one
//! partition; else the next in turn. A job that names its own id (a job file's `id`)
//! stays in the partition that id names. A batch's jobs and its fan-in job live in the
//! batch's partition (member ids are derived from the batch id, below bit 64).
//!
//! The count is the namespace's, kept at `{ns}:partitions` by the first process that
//! connects ([`agree`]): a process configured otherwise is refused, since it would put
//! jobs where nobody fetches or look for them where they are not.

use redis::AsyncCommands;

use super::{Conn, Keys, QueueError};
use crate::job::JobId;

/// The partition of job (or batch) `id` among `partitions`. A ULID's bits 65..80;
/// anything else (an entry someone else wrote) by a hash of its bytes.
pub fn of_id(id: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    match ulid::Ulid::from_string(id) {
        Ok(u) => (((u.0 >> 65) as u16) & 0x7FFF) % partitions,
        Err(_) => of_key(id, partitions),
    }
}

/// The partition of idempotency key `key`: FNV-1a of its bytes (the same in every
/// process and version).
pub fn of_key(key: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions)) as u16
}

/// `id` changed to name `partition` (of `partitions`): its bits 65..80 re-drawn to a
/// value that is `partition` modulo the count, and bit 64 cleared, so that the ids a
/// batch derives from it ([`JobId::nth_member`] adds less than 2^64 to the low bits,
/// which carries into bit 64 at most) stay in it.
pub fn place(id: JobId, partition: u16, partitions: u16) -> JobId {
    if partitions <= 1 {
        return id;
    }
    let partitions = u32::from(partitions);
    let spread = (0x8000 / partitions).max(1);
    let value = u32::from(partition) % partitions + partitions * fastrand::u32(0..spread);
    let bits = u128::from(value & 0x7FFF) << 65;
    let raw = (id.0 .0 & !(0xFFFF_u128 << 64)) | bits;
    JobId(ulid::Ulid(raw))
}

/// Makes sure every process of the namespace uses one partition count.
///
/// The count is kept at `{ns}:partitions`. One partition, the default, is stored by
/// the first write ([`claim`], from the producer), so a process that only connects
/// writes nothing; more than one is stored here, at connect, by one script that also
/// checks the namespace holds no jobs (their ids would name other partitions). A
/// process given no count (`wanted_explicitly` false: one node's 1, a cluster's 16)
/// adopts the stored one; one given another count is refused.
pub async fn agree(
    conn: &mut Conn,
    keys: &Keys,
    wanted: u16,
    wanted_explicitly: bool,
) -> Result<Keys, QueueError> {
    let key = keys.partitions_key();
    // Not a string (someone else's key): judged below as a bad count.
    let stored: Option<String> = match conn.get::<_, Option<String>>(&key).await {
        Ok(s) => s,
        Err(e) if e.code() == Some("WRONGTYPE") => Some(String::new()),
        Err(e) => return Err(e.into()),
    };
    let stored = match stored {
        Some(s) => s,
        None if wanted <= 1 => return Ok(keys.clone().with_partitions(1)),
        None => {
            let base = keys.at(0);
            let answer: String = super::scripts::PARTITIONS
                .prepare_invoke()
                .key(base.script_key())
                .arg(base.prefix())
                .arg(wanted)
                .arg(u8::from(wanted_explicitly))
                .invoke_async(conn)
                .await?;
            if answer == "used" {
                return Err(QueueError::Partitions {
                    namespace: keys.namespace().to_string(),
                    stored: 1,
                    wanted,
                });
            }
            answer
        }
    };
    let stored = parse(&key, &stored)?;
    if stored != wanted && wanted_explicitly {
        return Err(QueueError::Partitions {
            namespace: keys.namespace().to_string(),
            stored,
            wanted,
        });
    }
    Ok(keys.clone().with_partitions(stored))
}

/// Stores `keys`' count unless one is stored (the first write of a namespace), and
/// checks that the stored one is `keys`' (another process may have stored another
/// since this one connected).
pub async fn claim(conn: &mut Conn, keys: &Keys) -> Result<(), QueueError> {
    let key = keys.partitions_key();
    let (_, stored): (Option<String>, Option<String>) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(keys.partitions())
        .arg("NX")
        .get(&key)
        .query_async(conn)
        .await?;
    let stored = parse(&key, stored.as_deref().unwrap_or(""))?;
    if stored != keys.partitions() {
        return Err(QueueError::Partitions {
            namespace: keys.namespace().to_string(),
            stored,
            wanted: keys.partitions(),
        });
    }
    Ok(())
}

/// The stored count `text` of key `key`, or why it is not one.
fn parse(key: &str, text: &str) -> Result<u16, QueueError> {
    text.parse::<u16>()
        .ok()
        .filter(|n| (1..=crate::config::redis_target::MAX_PARTITIONS).contains(n))
        .ok_or_else(|| QueueError::Corrupt {
            id: key.to_string(),
            message: format!(
                "the stored partition count {:?} is not a number from 1 to 256 (delete the key if nothing uses the namespace)",
                text.chars().take(20).collect::<String>()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_is_always_zero() {
        assert_eq!(of_id("01JDX6Q6T3N7Z8YV1K0W2M4C5B", 1), 0);
        assert_eq!(of_key("k", 1), 0);
        let id = JobId::generate();
        assert_eq!(place(id, 3, 1), id);
    }

    #[test]
    fn a_placed_id_names_its_partition_and_so_do_its_batch_members() {
        for partitions in [2_u16, 3, 16, 255, 256] {
            for p in 0..partitions.min(20) {
                let id = place(JobId::generate(), p, partitions);
                assert_eq!(of_id(&id.to_string(), partitions), p, "{partitions}/{p}");
                for n in [0, 1, 999_999, u64::from(u32::MAX), u64::MAX - 1] {
                    let member = id.nth_member(n).to_string();
                    assert_eq!(of_id(&member, partitions), p);
                }
            }
        }
    }

    #[test]
    fn ids_and_keys_spread_over_every_partition() {
        let mut seen = [0_u32; 16];
        for _ in 0..1600 {
            seen[usize::from(of_id(&JobId::generate().to_string(), 16))] += 1;
        }
        assert!(seen.iter().all(|n| *n > 40), "{seen:?}");
        let mut seen = [0_u32; 16];
        for i in 0..1600 {
            seen[usize::from(of_key(&format!("order-{i}"), 16))] += 1;
        }
        assert!(seen.iter().all(|n| *n > 40), "{seen:?}");
        assert_eq!(of_key("same", 16), of_key("same", 16));
        // Not a ULID: hashed, still in range.
        assert!(of_id("invalid-entry", 16) < 16);
    }
}
