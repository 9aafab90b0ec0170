//! Tags and invalidation: a route or a warming task tags the keys it fills; each tag is a set
//! in the store, `prescient:tag:<tag>`, holding its keys (added before the value is written).
//! `PROXY INVALIDATE TAG <tag>` takes the set away atomically (RENAME) and unlinks every key in
//! it; keys filled later join a new set. The cleanup job removes entries whose keys are gone
//! (expired, evicted, deleted), so the index never outgrows the keys it describes.

use std::sync::Arc;

use bytes::Bytes;

use super::{call, Frame};
use crate::upstream::Upstream;

pub const PREFIX: &str = "prescient:tag:";

/// Keys unlinked per command.
const CHUNK: usize = 1000;

/// The set holding the keys tagged `tag`.
pub fn set_key(tag: &str) -> Bytes {
    Bytes::from(format!("{PREFIX}{tag}"))
}

/// Removes every key tagged `tag`; how many keys were removed. `note` is told each key before
/// it is removed (the origin marks a fill of it in flight as overwritten, so it is not stored).
pub async fn invalidate(
    up: &Arc<Upstream>,
    tag: &str,
    note: impl Fn(&Bytes),
) -> Result<u64, String> {
    let taken = Bytes::from(format!(
        "prescient:tag-dropping:{tag}:{:016x}",
        rand::random::<u64>()
    ));
    match call(
        up,
        &[Bytes::from_static(b"RENAME"), set_key(tag), taken.clone()],
    )
    .await
    {
        Ok(_) => {}
        Err(e) if e.contains("no such key") => return Ok(0),
        Err(e) => return Err(e),
    }
    let mut removed = 0u64;
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let (next, keys) = sscan(up, &taken, &cursor).await?;
        for chunk in keys.chunks(CHUNK) {
            let mut unlink = vec![Bytes::from_static(b"UNLINK")];
            for k in chunk {
                note(k);
                unlink.push(k.clone());
            }
            if let Frame::Integer(n) = call(up, &unlink).await? {
                removed += n.max(0) as u64;
            }
        }
        if next == b"0"[..] {
            break;
        }
        cursor = next;
    }
    call(up, &[Bytes::from_static(b"DEL"), taken]).await?;
    Ok(removed)
}

/// One SSCAN page of `set` from `cursor`: the next cursor and the members.
async fn sscan(
    up: &Arc<Upstream>,
    set: &Bytes,
    cursor: &Bytes,
) -> Result<(Bytes, Vec<Bytes>), String> {
    let args = [
        Bytes::from_static(b"SSCAN"),
        set.clone(),
        cursor.clone(),
        Bytes::from_static(b"COUNT"),
        Bytes::from(CHUNK.to_string()),
    ];
    scan_page(call(up, &args).await?)
}

/// A SCAN-family reply: the next cursor and the page's elements.
pub fn scan_page(f: Frame) -> Result<(Bytes, Vec<Bytes>), String> {
    match f {
        Frame::Array(mut parts) if parts.len() == 2 => {
            let items = match parts.pop() {
                Some(Frame::Array(items)) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        Frame::BulkString(b) => Some(Bytes::from(b)),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            match parts.pop() {
                Some(Frame::BulkString(c)) => Ok((Bytes::from(c), items)),
                _ => Err("a scan reply without a cursor".into()),
            }
        }
        other => Err(format!("unexpected scan reply {other:?}")),
    }
}

/// Removes, from every tag set, the keys that no longer exist; entries removed.
pub async fn clean(up: &Arc<Upstream>) -> Result<u64, String> {
    let mut removed = 0;
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let got = call(
            up,
            &[
                Bytes::from_static(b"SCAN"),
                cursor.clone(),
                Bytes::from_static(b"MATCH"),
                Bytes::from(format!("{PREFIX}*")),
                Bytes::from_static(b"COUNT"),
                Bytes::from_static(b"1000"),
            ],
        )
        .await?;
        let (next, sets) = scan_page(got)?;
        for set in sets {
            removed += clean_set(up, &set).await?;
        }
        if next == b"0"[..] {
            return Ok(removed);
        }
        cursor = next;
    }
}

async fn clean_set(up: &Arc<Upstream>, set: &Bytes) -> Result<u64, String> {
    let mut removed = 0;
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let (next, keys) = sscan(up, set, &cursor).await?;
        if !keys.is_empty() {
            let exists: Vec<Vec<Bytes>> = keys
                .iter()
                .map(|k| vec![Bytes::from_static(b"EXISTS"), k.clone()])
                .collect();
            let replies = super::pipeline(up, &exists).await?;
            let mut srem = vec![Bytes::from_static(b"SREM"), set.clone()];
            for (k, r) in keys.iter().zip(replies) {
                if r == Frame::Integer(0) {
                    srem.push(k.clone());
                }
            }
            if srem.len() > 2 {
                if let Frame::Integer(n) = call(up, &srem).await? {
                    removed += n.max(0) as u64;
                }
            }
        }
        if next == b"0"[..] {
            return Ok(removed);
        }
        cursor = next;
    }
}
