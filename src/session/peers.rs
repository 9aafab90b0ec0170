//! CLIENT subcommands that name other clients: KILL, UNBLOCK, and TRACKING's REDIRECT.
//!
//! Clients see prescient's ids and addresses (`CLIENT ID`, `CLIENT LIST`, `HELLO`), so these
//! act on prescient's clients. KILL closes the matching client connections here, as Redis
//! closes its own. UNBLOCK and REDIRECT must reach Redis, which knows none of prescient's ids:
//! they are forwarded with the Redis id of the target's own upstream connection (the dedicated
//! connection a blocked client waits on, the tunnel a subscribed client listens on). A target
//! with no connection of its own (not blocked, not subscribed, or gone) is answered as Redis
//! answers an id it does not know: `:0` for UNBLOCK, an error for REDIRECT. On `memory://` the
//! store has neither command, and they pass through unchanged.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Session;
use crate::command::Command;
use crate::protocol::Value;

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's `string2ll`-strict integer.
fn integer(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.starts_with('+') || (s.len() > 1 && (s.starts_with('0') || s.starts_with("-0"))) {
        return None;
    }
    s.parse().ok()
}

impl Session {
    /// The Redis id of prescient client `id`'s own upstream connection, if it has one.
    fn upstream_id_of(&self, id: i64) -> Option<i64> {
        let id = u64::try_from(id).ok()?;
        let e = self.sh.clients.get(id)?;
        Some(e.upstream_id.load(Ordering::Relaxed)).filter(|&u| u >= 0)
    }

    /// `CLIENT UNBLOCK <id> [TIMEOUT|ERROR]` (3 or 4 arguments): the command to forward, with
    /// the target's Redis id, or the reply to give here.
    pub(super) fn unblock(&self, cmd: &Command) -> Result<Command, Value> {
        if self.link.embedded() {
            return Ok(cmd.clone());
        }
        if cmd.args.len() == 4 && !(cmd.arg_is(3, "timeout") || cmd.arg_is(3, "error")) {
            return Err(Value::err(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ));
        }
        let id = integer(&cmd.args[2]).ok_or_else(|| Value::err(NOT_INTEGER))?;
        let Some(up) = self.upstream_id_of(id) else {
            return Err(Value::Int(0));
        };
        let mut args = cmd.args.clone();
        args[2] = Bytes::from(up.to_string());
        Ok(Command::from_args(args))
    }

    /// `CLIENT TRACKING ...`: the command to forward, its REDIRECT id (if any) replaced by the
    /// target's Redis id, or the error Redis gives for an id it does not know.
    pub(super) fn tracking_redirect(&self, cmd: &Command) -> Result<Command, Value> {
        if self.link.embedded() {
            return Ok(cmd.clone());
        }
        let mut args = cmd.args.clone();
        let mut j = 3;
        let mut seen = false;
        while j < args.len() {
            if cmd.arg_is(j, "redirect") && j + 1 < args.len() {
                j += 1;
                if seen {
                    return Err(Value::err(
                        "ERR A client can only redirect to a single other client",
                    ));
                }
                seen = true;
                let id = integer(&args[j]).ok_or_else(|| Value::err(NOT_INTEGER))?;
                let up = self.upstream_id_of(id).ok_or_else(|| {
                    Value::err("ERR The client ID you want redirect to does not exist")
                })?;
                args[j] = Bytes::from(up.to_string());
            }
            j += 1;
        }
        Ok(if seen {
            Command::from_args(args)
        } else {
            cmd.clone()
        })
    }

    /// `CLIENT KILL <addr>` or `CLIENT KILL <filter> <value> ...`, on prescient's clients.
    /// Returns the reply and whether this client closes after it.
    pub(super) fn kill(&self, cmd: &Command) -> (Value, bool) {
        let mut f = Filter {
            skipme: true,
            ..Filter::default()
        };
        let old_form = cmd.args.len() == 3;
        if old_form {
            f.addr = Some(cmd.args[2].clone());
            f.skipme = false;
        } else if cmd.args.len() > 3 {
            if let Err(e) = self.parse_filter(cmd, &mut f) {
                return (e, false);
            }
        } else {
            return (Value::err(SYNTAX), false);
        }
        let me = self.entry.id;
        let mut killed = 0;
        let mut close_self = false;
        for e in self.sh.clients.all() {
            let matches = f
                .addr
                .as_ref()
                .is_none_or(|a| a[..] == *e.addr.to_string().as_bytes())
                && f.laddr
                    .as_ref()
                    .is_none_or(|a| a[..] == *e.laddr.to_string().as_bytes())
                && f.id.is_none_or(|id| id == e.id)
                && f.user.as_ref().is_none_or(|u| *u == e.user())
                && f.kind.is_none_or(|k| match k {
                    Kind::Normal => !e.subscribed.load(Ordering::Relaxed),
                    Kind::PubSub => e.subscribed.load(Ordering::Relaxed),
                    Kind::Replica => false,
                });
            if !matches || (e.id == me && f.skipme) {
                continue;
            }
            if e.id == me {
                close_self = true;
            } else {
                e.killed.cancel();
            }
            killed += 1;
        }
        let v = match (old_form, killed) {
            (true, 0) => Value::err("ERR No such client"),
            (true, _) => Value::ok(),
            (false, n) => Value::Int(n),
        };
        (v, close_self)
    }

    fn parse_filter(&self, cmd: &Command, f: &mut Filter) -> Result<(), Value> {
        let a = &cmd.args;
        let mut i = 2;
        while i < a.len() {
            if i + 1 >= a.len() {
                return Err(Value::err(SYNTAX));
            }
            let v = &a[i + 1];
            if cmd.arg_is(i, "id") {
                match integer(v) {
                    Some(n) if n >= 1 => f.id = Some(n as u64),
                    _ => return Err(Value::err("ERR client-id should be greater than 0")),
                }
            } else if cmd.arg_is(i, "type") {
                let t = String::from_utf8_lossy(v).to_ascii_lowercase();
                // A subscribed client (relayed to Redis in a tunnel) is pubsub, as Redis types
                // it; no prescient client is a master or replica.
                f.kind = Some(match t.as_str() {
                    "normal" => Kind::Normal,
                    "pubsub" => Kind::PubSub,
                    "master" | "slave" | "replica" => Kind::Replica,
                    _ => {
                        let t = String::from_utf8_lossy(v);
                        return Err(Value::err(format!("ERR Unknown client type '{t}'")));
                    }
                });
            } else if cmd.arg_is(i, "addr") {
                f.addr = Some(v.clone());
            } else if cmd.arg_is(i, "laddr") {
                f.laddr = Some(v.clone());
            } else if cmd.arg_is(i, "user") {
                f.user = Some(self.user_name(v).ok_or_else(|| {
                    Value::err(format!("ERR No such user '{}'", String::from_utf8_lossy(v)))
                })?);
            } else if cmd.arg_is(i, "skipme") {
                f.skipme = match String::from_utf8_lossy(v).to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(Value::err(SYNTAX)),
                };
            } else {
                return Err(Value::err(SYNTAX));
            }
            i += 2;
        }
        Ok(())
    }

    /// `name` when it is "default" or a configured user.
    fn user_name(&self, name: &[u8]) -> Option<String> {
        let known = name == b"default" || self.sh.auth.load().user(name).is_some();
        known.then(|| String::from_utf8_lossy(name).into_owned())
    }
}

/// A client type, as CLIENT KILL TYPE names it.
#[derive(Clone, Copy)]
enum Kind {
    Normal,
    PubSub,
    /// master, slave or replica: none of prescient's clients.
    Replica,
}

#[derive(Default)]
struct Filter {
    addr: Option<Bytes>,
    laddr: Option<Bytes>,
    id: Option<u64>,
    user: Option<String>,
    /// TYPE, when given.
    kind: Option<Kind>,
    skipme: bool,
}

#[cfg(test)]
mod tests {
    use super::integer;

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(integer(b"12"), Some(12));
        assert_eq!(integer(b"-3"), Some(-3));
        assert_eq!(integer(b"0"), Some(0));
        assert_eq!(integer(b"+3"), None);
        assert_eq!(integer(b"012"), None);
        assert_eq!(integer(b"1x"), None);
        assert_eq!(integer(b""), None);
    }
}
