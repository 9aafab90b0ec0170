//! Pub/sub outside a tunnel: UNSUBSCRIBE answered when not subscribed (as Redis does), and the
//! SUBSCRIBE that turns the connection into a tunnel once every reply before it is out.

use super::*;

impl Session {
    pub(super) async fn pubsub(
        &mut self,
        cmd: Command,
        start: Instant,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let name = cmd.known_name().unwrap_or("");
        if self.st.in_multi {
            // Queued inside the transaction like any other command.
            return self
                .send(cmd, start, Conn::Dedicated, Wait::Deadline, Effect::None, w)
                .await;
        }
        if name.contains("unsubscribe") {
            // Not subscribed (a subscribed client is tunnelled): Redis answers one
            // confirmation per argument, or one with a nil channel, and never enters pub/sub.
            let kind = Value::text(name);
            let mut out = Vec::new();
            let channels: Vec<Value> = if cmd.args.len() > 1 {
                cmd.args[1..]
                    .iter()
                    .map(|c| Value::Bulk(c.clone()))
                    .collect()
            } else {
                vec![Value::Nil]
            };
            for ch in channels {
                let v = Value::Array(vec![kind.clone(), ch, Value::Int(0)]);
                out.extend_from_slice(&v.encode(self.proto));
            }
            if self.proto == Proto::Resp3 {
                // In RESP3 the confirmations are pushes: '>' instead of '*'.
                for i in find_array_starts(&out) {
                    out[i] = b'>';
                }
            }
            w.push(Pending::ready(
                cmd.spec,
                start,
                Bytes::from(out),
                Outcome::Ok,
            ));
            return Ok(());
        }
        w.barrier(self).await?;
        self.tunnel = Some(TunnelStart {
            first: cmd,
            db: self.st.db,
        });
        Ok(())
    }
}

/// Offsets of the top-level arrays in a sequence of encoded 3-element confirmation arrays.
fn find_array_starts(buf: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        out.push(i);
        match crate::protocol::reply::reply_len(&buf[i..], Proto::Resp3) {
            Ok(Some(n)) => i += n,
            _ => break,
        }
    }
    out
}
