//! The proxy's own client of the upstream, for work no application asked for: filling a key
//! read through from the origin, prefetching, jobs. It speaks to either backend the same way:
//! on Redis through a shared connection of its own slot (commands in order, each with the
//! usual deadline), on the embedded store through a `MemConn` of its own. Replies are raw
//! RESP2; an error reply is a reply (`Ok`), and `Err` means the upstream did not answer.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::memory::{Exec, MemConn};
use super::{Patience, Reply, Upstream, UpstreamError};
use crate::command::{encode_request, Command};
use crate::protocol::Proto;

/// An internal client: one per task that needs one (it is not shared between tasks).
pub struct Internal {
    up: Arc<Upstream>,
    link: Link,
}

enum Link {
    /// A slot of the shared connections, as a client gets one.
    Redis(usize),
    Memory(Box<MemConn>),
}

impl Internal {
    pub fn new(up: Arc<Upstream>) -> Internal {
        let link = match up.memory() {
            Some(store) => Link::Memory(Box::new(MemConn::new(store.clone()))),
            None => Link::Redis(up.assign()),
        };
        Internal { up, link }
    }

    /// Runs one command and returns its reply.
    pub async fn call(&mut self, args: &[Bytes]) -> Reply {
        let rx = self.submit(args)?;
        receive(rx).await
    }

    /// Runs commands in order, sent together; their replies in the same order. The first
    /// failure to get a reply at all ends it.
    pub async fn pipeline(&mut self, cmds: &[Vec<Bytes>]) -> Result<Vec<Bytes>, UpstreamError> {
        let mut waiting = Vec::with_capacity(cmds.len());
        for c in cmds {
            waiting.push(self.submit(c)?);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(receive(rx).await?);
        }
        Ok(out)
    }

    fn submit(&mut self, args: &[Bytes]) -> Result<Pending, UpstreamError> {
        match &mut self.link {
            Link::Redis(slot) => {
                let raw = encode_request(args);
                let patience = Patience::Until(self.up.deadline(Instant::now()));
                let rx = self.up.shared(*slot, Proto::Resp2)?.send(raw, patience)?;
                Ok(Pending::Later(rx))
            }
            Link::Memory(m) => {
                let cmd = Command::from_args(args.iter().cloned());
                Ok(match m.execute(&cmd, Proto::Resp2) {
                    Exec::Ready(b) => Pending::Now(b),
                    Exec::Later(rx) => Pending::Later(rx),
                })
            }
        }
    }
}

enum Pending {
    Now(Bytes),
    Later(oneshot::Receiver<Reply>),
}

async fn receive(p: Pending) -> Reply {
    match p {
        Pending::Now(b) => Ok(b),
        Pending::Later(rx) => rx.await.unwrap_or(Err(UpstreamError::Closed)),
    }
}
