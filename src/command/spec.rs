//! The shape of one command-table row: arity, flags, ACL categories, where the keys and values
//! are, and what connection state the command touches. Pure data and pure functions over it.

/// Command flags. The first group mirrors Redis's own `COMMAND` flags.
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const MOVABLE: u32 = 1 << 11;
    pub const NO_MULTI: u32 = 1 << 12;
}

/// ACL categories, as Redis names them (`@read`, `@write`, ...).
pub mod cat {
    pub const ADMIN: u32 = 1 << 0;
    pub const BITMAP: u32 = 1 << 1;
    pub const BLOCKING: u32 = 1 << 2;
    pub const CONNECTION: u32 = 1 << 3;
    pub const DANGEROUS: u32 = 1 << 4;
    pub const FAST: u32 = 1 << 5;
    pub const GEO: u32 = 1 << 6;
    pub const HASH: u32 = 1 << 7;
    pub const HYPERLOGLOG: u32 = 1 << 8;
    pub const KEYSPACE: u32 = 1 << 9;
    pub const LIST: u32 = 1 << 10;
    pub const PUBSUB: u32 = 1 << 11;
    pub const READ: u32 = 1 << 12;
    pub const SCRIPTING: u32 = 1 << 13;
    pub const SET: u32 = 1 << 14;
    pub const SLOW: u32 = 1 << 15;
    pub const SORTEDSET: u32 = 1 << 16;
    pub const STREAM: u32 = 1 << 17;
    pub const STRING: u32 = 1 << 18;
    pub const TRANSACTION: u32 = 1 << 19;
    pub const WRITE: u32 = 1 << 20;

    /// Category bit for a name such as `read` (without the `@`); `None` if unknown.
    pub fn by_name(name: &str) -> Option<u32> {
        const NAMES: [(&str, u32); 21] = [
            ("admin", ADMIN),
            ("bitmap", BITMAP),
            ("blocking", BLOCKING),
            ("connection", CONNECTION),
            ("dangerous", DANGEROUS),
            ("fast", FAST),
            ("geo", GEO),
            ("hash", HASH),
            ("hyperloglog", HYPERLOGLOG),
            ("keyspace", KEYSPACE),
            ("list", LIST),
            ("pubsub", PUBSUB),
            ("read", READ),
            ("scripting", SCRIPTING),
            ("set", SET),
            ("slow", SLOW),
            ("sortedset", SORTEDSET),
            ("stream", STREAM),
            ("string", STRING),
            ("transaction", TRANSACTION),
            ("write", WRITE),
        ];
        if name.eq_ignore_ascii_case("all") {
            return Some(u32::MAX);
        }
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
    }
}

/// Where a command's keys are, by argument index (0 is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    None,
    /// Redis's (first, last, step); a negative `last` counts from the end (-1 = last argument).
    Range {
        first: u8,
        last: i8,
        step: u8,
    },
    /// A key count at `at`, then that many keys from `first` (EVAL, ZUNION, LMPOP, ...).
    NumKeys {
        at: u8,
        first: u8,
    },
    /// A destination key at 1, then a key count at 2 and the keys from 3 (ZUNIONSTORE, ...).
    DestNumKeys,
    /// The keys are the first half of the arguments after `STREAMS` (XREAD, XREADGROUP).
    Streams,
}

/// Which arguments are stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    None,
    At(u8),
    /// `start`, `start + step`, ... to the end.
    Every {
        start: u8,
        step: u8,
    },
}

/// The connection state a command reads or changes, which decides where the proxy sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Stateless: any shared upstream connection will do.
    None,
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH: the client needs a dedicated connection.
    Transaction,
    /// The (P|S)(UN)SUBSCRIBE family: the client's connection becomes a pub/sub tunnel.
    PubSub,
    /// MONITOR: the connection becomes a tunnel streaming the upstream's monitor feed.
    Monitor,
    /// SELECT: a non-default database needs a dedicated connection.
    Select,
    /// RESET: clears the client's connection state.
    Reset,
    /// Blocks the connection until it returns (also set for commands flagged `blocking`).
    Blocking,
    /// CLIENT: some subcommands are answered by the proxy, some pin, some are forwarded.
    Client,
    /// Answered by the proxy itself (HELLO, AUTH, QUIT, INFO, PROXY).
    Local,
}

/// One row of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    /// Redis arity: positive = exact argument count (including the name), negative = at least.
    pub arity: i32,
    pub flags: u32,
    pub categories: u32,
    pub keys: Keys,
    pub values: Values,
    pub state: State,
}

impl CommandSpec {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether `argc` arguments (including the name) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= a.unsigned_abs() as usize
        }
    }

    /// Argument indexes of the keys of a command with `args` (`args[0]` is the name).
    pub fn key_indexes(&self, args: &[impl AsRef<[u8]>]) -> Vec<usize> {
        let n = args.len();
        match self.keys {
            Keys::None => Vec::new(),
            Keys::Range { first, last, step } => {
                let first = first as usize;
                let last = if last < 0 {
                    n as isize + last as isize
                } else {
                    last as isize
                };
                if last < first as isize || first >= n {
                    return Vec::new();
                }
                let last = (last as usize).min(n - 1);
                (first..=last).step_by(step.max(1) as usize).collect()
            }
            Keys::NumKeys { at, first } => numkeys(args, at as usize, first as usize),
            Keys::DestNumKeys => {
                let mut v = if n > 1 { vec![1] } else { Vec::new() };
                v.extend(numkeys(args, 2, 3));
                v
            }
            Keys::Streams => {
                let pos = args
                    .iter()
                    .position(|a| a.as_ref().eq_ignore_ascii_case(b"streams"));
                match pos {
                    Some(p) => {
                        let rest = n - p - 1;
                        (p + 1..p + 1 + rest / 2).collect()
                    }
                    None => Vec::new(),
                }
            }
        }
    }

    /// Argument indexes of the stored values of a command with `argc` arguments.
    pub fn value_indexes(&self, argc: usize) -> impl Iterator<Item = usize> {
        let (start, step, single) = match self.values {
            Values::None => (argc, 1, false),
            Values::At(i) => (i as usize, 1, true),
            Values::Every { start, step } => (start as usize, step.max(1) as usize, false),
        };
        let end = if single { (start + 1).min(argc) } else { argc };
        (start..end.max(start)).step_by(step)
    }
}

fn numkeys(args: &[impl AsRef<[u8]>], at: usize, first: usize) -> Vec<usize> {
    let count = args
        .get(at)
        .and_then(|a| std::str::from_utf8(a.as_ref()).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let end = first.saturating_add(count).min(args.len());
    (first.min(end)..end).collect()
}
