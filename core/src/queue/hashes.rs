//! Reading fields of many hashes someone else may have written into: `HMGET` of a key
//! of another type fails a whole pipeline, so the keys' types are asked first (one
//! pipeline) and only the hashes are read (a second one). Values come back as bytes: a
//! value someone else wrote may not be UTF-8.

use super::{Conn, QueueError};

/// `fields` of each of `keys`, in order: `None` for a key that is not a hash (absent,
/// or of another type), else one value per field (`None` where the field is absent).
/// Two round trips, whatever the keys hold; fields not asked for are never read.
pub(crate) async fn hmget_hashes<F: redis::ToRedisArgs>(
    conn: &mut Conn,
    keys: &[String],
    fields: &[F],
) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>, QueueError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    let mut asked = 0;
    for (key, t) in keys.iter().zip(&types) {
        if t == "hash" {
            pipe.cmd("HMGET").arg(key).arg(fields);
            asked += 1;
        }
    }
    let mut got: std::vec::IntoIter<Vec<Option<Vec<u8>>>> = if asked == 0 {
        Vec::new().into_iter()
    } else {
        pipe.query_async::<Vec<Vec<Option<Vec<u8>>>>>(conn)
            .await?
            .into_iter()
    };
    Ok(types
        .iter()
        .map(|t| if t == "hash" { got.next() } else { None })
        .collect())
}
