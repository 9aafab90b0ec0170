//! Commands: the command table (`table.rs`, one row per Redis command) and `Command`, a client
//! request parsed once at the edge. Routing, pinning, access control, compression and tracking
//! all read the table; nothing else hard-codes command names.

pub mod acl;
mod spec;
mod table;

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;

pub use spec::{cat, flag, CommandSpec, Keys, State, Values};

static BY_NAME: LazyLock<HashMap<&'static [u8], &'static CommandSpec>> = LazyLock::new(|| {
    table::COMMANDS
        .iter()
        .map(|c| (c.name.as_bytes(), c))
        .collect()
});

/// Longest command name in the table, with room to spare; longer names are unknown.
const MAX_NAME: usize = 32;

/// The table row for a command name, matched without regard to case and without allocating.
///
/// ```
/// use prescient::command::{lookup, Command, State};
///
/// let get = lookup(b"GET").expect("GET is in the table");
/// assert_eq!((get.name, get.arity), ("get", 2));
/// let blpop = Command::from_args(["BLPOP", "jobs", "0"].map(|s| s.as_bytes().to_vec()));
/// assert_eq!(blpop.state(), State::Blocking);
/// assert_eq!(blpop.keys().collect::<Vec<_>>(), ["jobs"]);
/// ```
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(&*lower).copied()
}

/// The row's position in the table (for per-command arrays such as metrics).
pub fn index_of(spec: &'static CommandSpec) -> usize {
    let base = table::COMMANDS.as_ptr() as usize;
    (spec as *const CommandSpec as usize - base) / std::mem::size_of::<CommandSpec>()
}

/// Every row of the table, sorted by name.
pub fn all() -> &'static [CommandSpec] {
    table::COMMANDS
}

/// A client request: its exact bytes (forwarded as they came) and its arguments, which are
/// slices of those bytes. `args[0]` is the command name.
#[derive(Debug, Clone)]
pub struct Command {
    pub raw: Bytes,
    pub args: Vec<Bytes>,
    pub spec: Option<&'static CommandSpec>,
}

impl Command {
    /// Builds a command from its request bytes and arguments (non-empty).
    pub fn new(raw: Bytes, args: Vec<Bytes>) -> Self {
        let spec = args.first().and_then(|n| lookup(n));
        Command { raw, args, spec }
    }

    /// Builds a command from arguments alone, encoding them as a RESP array.
    pub fn from_args<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        let args: Vec<Bytes> = args.into_iter().map(Into::into).collect();
        let raw = encode_request(&args);
        Command::new(raw, args)
    }

    /// The command name as sent (case preserved).
    pub fn name(&self) -> &[u8] {
        &self.args[0]
    }

    /// The table's lower-case name, or `None` for a command the table does not know.
    pub fn known_name(&self) -> Option<&'static str> {
        self.spec.map(|s| s.name)
    }

    /// Whether argument `i` equals `word`, ignoring case.
    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }

    /// The subcommand (argument 1) in lower case, for container commands such as CLIENT.
    pub fn subcommand(&self) -> Option<String> {
        self.args
            .get(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
    }

    pub fn has(&self, flag: u32) -> bool {
        self.spec.is_some_and(|s| s.has(flag))
    }

    /// Whether this command may hold Redis itself for long: a script or function runs to its
    /// end before Redis serves anyone (past `busy-reply-threshold` it answers others `BUSY`),
    /// KEYS and a synchronous FLUSHALL walk the whole keyspace, DEBUG SLEEP and SAVE stop it.
    /// While one is in flight the upstream's silence is expected (see `upstream::Patience`).
    pub fn holds_server(&self) -> bool {
        matches!(
            self.known_name(),
            Some(
                "eval"
                    | "evalsha"
                    | "eval_ro"
                    | "evalsha_ro"
                    | "fcall"
                    | "fcall_ro"
                    | "keys"
                    | "flushall"
                    | "flushdb"
                    | "debug"
                    | "save"
            )
        )
    }

    /// Whether Redis runs this command while a script holds it (the `ALLOW_BUSY` commands a
    /// proxy client can send: SCRIPT KILL, FUNCTION KILL, FUNCTION STATS, SHUTDOWN). They go
    /// to Redis on a connection of their own, since a shared one may be queued behind the
    /// very script they are meant to stop.
    pub fn runs_while_busy(&self) -> bool {
        match self.known_name() {
            Some("shutdown") => true,
            Some("script") => self.args.len() == 2 && self.arg_is(1, "kill"),
            Some("function") => {
                self.args.len() == 2 && (self.arg_is(1, "kill") || self.arg_is(1, "stats"))
            }
            _ => false,
        }
    }

    /// Where this command needs its connection state handled.
    pub fn state(&self) -> State {
        match self.spec {
            None => State::None,
            Some(s) if s.state != State::None => s.state,
            Some(s) if s.has(flag::BLOCKING) => {
                // XREAD and XREADGROUP block only with a BLOCK argument.
                if matches!(s.name, "xread" | "xreadgroup")
                    && !self.args.iter().any(|a| a.eq_ignore_ascii_case(b"block"))
                {
                    State::None
                } else {
                    State::Blocking
                }
            }
            Some(_) => State::None,
        }
    }

    /// The key arguments, as the table places them.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        let idx = self
            .spec
            .map(|s| s.key_indexes(&self.args))
            .unwrap_or_default();
        idx.into_iter().filter_map(move |i| self.args.get(i))
    }
}

/// Encodes arguments as a RESP array of bulk strings.
pub fn encode_request(args: &[Bytes]) -> Bytes {
    let len: usize = args.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(len);
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())))
    }

    #[test]
    fn lookup_ignores_case_and_rejects_unknown() {
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(&[b'a'; 100]).is_none());
    }

    #[test]
    fn table_is_sorted_and_unique() {
        let names: Vec<_> = all().iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn key_positions_follow_the_table() {
        let keys = |c: &Command| c.keys().map(|k| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(keys(&cmd(&["GET", "a"])), vec![b"a".to_vec()]);
        assert_eq!(
            keys(&cmd(&["MSET", "a", "1", "b", "2"])),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(&cmd(&["BLPOP", "x", "y", "0"])),
            vec![b"x".to_vec(), b"y".to_vec()]
        );
        assert_eq!(
            keys(&cmd(&["EVAL", "s", "2", "k1", "k2", "arg"])),
            vec![b"k1".to_vec(), b"k2".to_vec()]
        );
        assert_eq!(
            keys(&cmd(&[
                "ZUNIONSTORE",
                "d",
                "2",
                "a",
                "b",
                "WEIGHTS",
                "1",
                "2"
            ])),
            vec![b"d".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(&cmd(&[
                "XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"
            ])),
            vec![b"s1".to_vec(), b"s2".to_vec()]
        );
        // A hostile key count never indexes past the arguments.
        assert_eq!(
            keys(&cmd(&["EVAL", "s", "18446744073709551615", "k"])),
            vec![b"k".to_vec()]
        );
        assert_eq!(keys(&cmd(&["EVAL", "s", "5", "k"])), vec![b"k".to_vec()]);
    }

    #[test]
    fn value_positions_follow_the_table() {
        let vals = |c: &Command| {
            c.spec
                .unwrap()
                .value_indexes(c.args.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(vals(&cmd(&["SET", "k", "v", "EX", "10"])), vec![2]);
        assert_eq!(vals(&cmd(&["MSET", "a", "1", "b", "2"])), vec![2, 4]);
        assert_eq!(vals(&cmd(&["HSET", "h", "f", "v", "g", "w"])), vec![3, 5]);
        assert_eq!(vals(&cmd(&["RPUSH", "l", "a", "b"])), vec![2, 3]);
        assert_eq!(vals(&cmd(&["SET", "k"])), Vec::<usize>::new());
        assert_eq!(vals(&cmd(&["GET", "k"])), Vec::<usize>::new());
    }

    #[test]
    fn state_follows_flags_and_arguments() {
        assert_eq!(cmd(&["MULTI"]).state(), State::Transaction);
        assert_eq!(cmd(&["BLPOP", "a", "0"]).state(), State::Blocking);
        assert_eq!(cmd(&["XREAD", "STREAMS", "s", "0"]).state(), State::None);
        assert_eq!(
            cmd(&["xread", "block", "0", "STREAMS", "s", "0"]).state(),
            State::Blocking
        );
        assert_eq!(cmd(&["WAIT", "0", "0"]).state(), State::Blocking);
        assert_eq!(cmd(&["SUBSCRIBE", "c"]).state(), State::PubSub);
        assert_eq!(cmd(&["GET", "a"]).state(), State::None);
        assert_eq!(cmd(&["FOO"]).state(), State::None);
    }

    #[test]
    fn arity_matches_redis() {
        assert!(lookup(b"get").unwrap().arity_ok(2));
        assert!(!lookup(b"get").unwrap().arity_ok(3));
        assert!(lookup(b"mset").unwrap().arity_ok(5));
        assert!(!lookup(b"mset").unwrap().arity_ok(2));
    }
}
