//! The routing decision, pure: from a client's connection state and one command, where the
//! command goes and what the state becomes. No sockets, no upstream: unit-tested here, and
//! acted on by `Session::route`.
//!
//! State is tracked when a command is sent, not when its reply arrives: a pipelining client
//! sends `MULTI SET EXEC` before any reply comes back, and all three must take the same route.

use crate::command::{Command, State};

/// Connection state that Redis keeps per connection, as far as routing cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ConnState {
    pub in_multi: bool,
    pub watching: bool,
    pub db: u32,
    /// CLIENT TRACKING, NO-TOUCH and the like: kept until RESET or disconnect.
    pub sticky: bool,
}

impl ConnState {
    /// Whether the state lives on a connection of the client's own.
    pub fn needs_dedicated(&self, default_db: u32) -> bool {
        self.in_multi || self.watching || self.sticky || self.db != default_db
    }
}

/// Which upstream connection a command travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    /// The client's shared, pipelined connection.
    Shared,
    /// A connection of the client's own, holding its state.
    Dedicated,
}

/// How long the command may wait for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The upstream timeout applies.
    Deadline,
    /// A blocking command: it may wait for data as long as it says.
    Block,
}

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// On a connection opened for it alone (SCRIPT KILL while a script may hold Redis).
    OutOfBand,
    /// Answered by the proxy (AUTH, HELLO, QUIT, INFO, PROXY).
    Local,
    /// A CLIENT subcommand.
    Client,
    /// RESET: after every reply owed, all state is dropped.
    Reset,
    /// SUBSCRIBE and friends outside MULTI, on a Redis upstream (pubsub.rs).
    PubSub,
    /// MONITOR outside MULTI, on a Redis upstream: a tunnel once every reply owed is out.
    Monitor,
    /// SELECT on `conn`: the database becomes `db` once it is sent (None: not a valid index,
    /// Redis answers the error).
    Select { conn: Conn, db: Option<u32> },
    /// Sent on `conn`.
    Forward { conn: Conn, wait: Wait },
}

/// Decides the route of `cmd` for a client in state `st`, and the state after it. `embedded`:
/// the upstream is `memory://`, whose store keeps pub/sub and blocking per connection itself.
pub(super) fn decide(
    st: ConnState,
    default_db: u32,
    embedded: bool,
    cmd: &Command,
) -> (Route, ConnState) {
    let mut next = st;
    let dedicated = |s: &ConnState| match s.needs_dedicated(default_db) {
        true => Conn::Dedicated,
        false => Conn::Shared,
    };
    if cmd.runs_while_busy() && !embedded && !st.in_multi {
        return (Route::OutOfBand, next);
    }
    let route = match cmd.state() {
        State::Local => Route::Local,
        State::Client => Route::Client,
        State::Reset => {
            next = ConnState {
                db: default_db,
                ..ConnState::default()
            };
            Route::Reset
        }
        State::Transaction => {
            match cmd.known_name() {
                Some("multi") => next.in_multi = true,
                Some("exec" | "discard") => {
                    next.in_multi = false;
                    next.watching = false;
                }
                Some("watch") if !st.in_multi => next.watching = true,
                Some("unwatch") if !st.in_multi => next.watching = false,
                _ => {}
            }
            // EXEC goes where its MULTI went, whatever the state after it.
            let conn = if st.needs_dedicated(default_db) || next.needs_dedicated(default_db) {
                Conn::Dedicated
            } else {
                Conn::Shared
            };
            Route::Forward {
                conn,
                wait: Wait::Deadline,
            }
        }
        State::PubSub | State::Monitor if embedded => Route::Forward {
            conn: Conn::Shared,
            wait: Wait::Deadline,
        },
        State::PubSub => Route::PubSub,
        State::Monitor if !st.in_multi => Route::Monitor,
        State::Select => {
            let db = cmd
                .args
                .get(1)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|_| cmd.args.len() == 2);
            let conn = match db {
                Some(n) if n != default_db => Conn::Dedicated,
                _ => dedicated(&st),
            };
            if let Some(n) = db {
                next.db = n;
            }
            Route::Select { conn, db }
        }
        // Inside MULTI a blocking command is queued, and EXEC runs it without blocking.
        State::Blocking => Route::Forward {
            conn: Conn::Dedicated,
            wait: if st.in_multi {
                Wait::Deadline
            } else {
                Wait::Block
            },
        },
        _ => Route::Forward {
            conn: dedicated(&st),
            wait: Wait::Deadline,
        },
    };
    (route, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        Command::from_args(line.split(' ').map(|s| bytes::Bytes::from(s.to_string())))
    }

    /// Runs a sequence from a fresh state on a Redis upstream; the routes taken.
    fn routes(lines: &[&str]) -> Vec<Route> {
        let mut st = ConnState::default();
        lines
            .iter()
            .map(|l| {
                let (r, next) = decide(st, 0, false, &cmd(l));
                st = next;
                r
            })
            .collect()
    }

    const SHARED: Route = Route::Forward {
        conn: Conn::Shared,
        wait: Wait::Deadline,
    };
    const DEDICATED: Route = Route::Forward {
        conn: Conn::Dedicated,
        wait: Wait::Deadline,
    };

    #[test]
    fn plain_commands_share_and_transactions_hold_their_own_connection() {
        assert_eq!(
            routes(&["GET a", "MULTI", "SET a 1", "EXEC", "GET a"]),
            vec![SHARED, DEDICATED, DEDICATED, DEDICATED, SHARED]
        );
        assert_eq!(
            routes(&["WATCH a", "GET a", "MULTI", "EXEC", "GET a"]),
            vec![DEDICATED, DEDICATED, DEDICATED, DEDICATED, SHARED]
        );
        // UNWATCH clears the watch, and itself goes where the watch was.
        assert_eq!(
            routes(&["WATCH a", "UNWATCH", "GET a"]),
            vec![DEDICATED, DEDICATED, SHARED]
        );
    }

    #[test]
    fn blocking_blocks_outside_multi_only() {
        let block = Route::Forward {
            conn: Conn::Dedicated,
            wait: Wait::Block,
        };
        assert_eq!(routes(&["BLPOP q 0", "GET a"]), vec![block, SHARED]);
        assert_eq!(
            routes(&["MULTI", "BLPOP q 0", "EXEC"]),
            vec![DEDICATED, DEDICATED, DEDICATED]
        );
    }

    #[test]
    fn select_moves_the_client_to_its_own_connection_until_it_comes_back() {
        assert_eq!(
            routes(&["SELECT 2", "GET a", "SELECT 0", "GET a", "SELECT x"]),
            vec![
                Route::Select {
                    conn: Conn::Dedicated,
                    db: Some(2)
                },
                DEDICATED,
                Route::Select {
                    conn: Conn::Dedicated,
                    db: Some(0)
                },
                SHARED,
                Route::Select {
                    conn: Conn::Shared,
                    db: None
                },
            ]
        );
    }

    #[test]
    fn kills_go_out_of_band_except_inside_multi_and_on_the_embedded_store() {
        assert_eq!(routes(&["SCRIPT KILL"]), vec![Route::OutOfBand]);
        assert_eq!(routes(&["FUNCTION KILL"]), vec![Route::OutOfBand]);
        assert_eq!(routes(&["SCRIPT FLUSH"]), vec![SHARED]);
        assert_eq!(
            routes(&["MULTI", "SCRIPT KILL"]),
            vec![DEDICATED, DEDICATED]
        );
        let st = ConnState::default();
        assert_eq!(decide(st, 0, true, &cmd("SCRIPT KILL")).0, SHARED);
    }

    #[test]
    fn pubsub_and_monitor_tunnel_on_redis_and_stay_on_the_embedded_store() {
        assert_eq!(routes(&["SUBSCRIBE ch"]), vec![Route::PubSub]);
        assert_eq!(routes(&["MONITOR"]), vec![Route::Monitor]);
        let st = ConnState::default();
        assert_eq!(decide(st, 0, true, &cmd("SUBSCRIBE ch")).0, SHARED);
        assert_eq!(decide(st, 0, true, &cmd("MONITOR")).0, SHARED);
    }

    #[test]
    fn reset_clears_everything_back_to_the_default_database() {
        let st = ConnState {
            in_multi: true,
            watching: true,
            db: 3,
            sticky: true,
        };
        let (r, next) = decide(st, 1, false, &cmd("RESET"));
        assert_eq!(r, Route::Reset);
        assert_eq!(
            next,
            ConnState {
                db: 1,
                ..ConnState::default()
            }
        );
    }
}
