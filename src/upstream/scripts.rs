//! The proxy's own atomic operations: Lua scripts on Redis, the same operations done natively
//! by the embedded store (memory/scripts.rs), which recognises these exact bodies and runs
//! nothing else. Jobs and the counter hook use them for what must happen all at once or not at
//! all: an increment with its recorded delta, a lease with its fencing token, a claim.
//!
//! Each script declares every key it touches in KEYS. tests/jobs.rs runs each on both
//! backends and compares the replies.

use bytes::Bytes;

/// A script: its name (for errors and tests) and its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    pub name: &'static str,
    pub lua: &'static str,
}

/// KEYS: counter key, pending-deltas hash. ARGV: delta field, delta, the command itself.
/// Runs the command; when it succeeds, adds the delta to the pending hash. An error reply of
/// the command is the script's reply, and nothing is recorded.
pub const COUNT: Script = Script {
    name: "count",
    lua: "local r = redis.pcall(unpack(ARGV, 3)) \
if type(r) == 'table' and r.err then return r end \
redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2]) \
return r",
};

/// KEYS: lease, fence counter. ARGV: holder, ttl ms. The holder's token: the lease's token
/// (renewed) when it holds it, a new one from the fence counter when nobody does, 0 when
/// another holder does.
pub const LEASE: Script = Script {
    name: "lease",
    lua: "local cur = redis.call('GET', KEYS[1]) \
if cur then \
local sp = string.find(cur, ' ', 1, true) \
if sp and string.sub(cur, 1, sp - 1) == ARGV[1] then \
redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
return tonumber(string.sub(cur, sp + 1)) end \
return 0 end \
local t = redis.call('INCR', KEYS[2]) \
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2]) \
return t",
};

/// KEYS: lease. ARGV: the lease's value (`holder token`). Deletes it only if it is still that.
pub const RELEASE: Script = Script {
    name: "release",
    lua: "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
return 0",
};

/// KEYS: fence counter, then the keys the command touches. ARGV: token, the command. Runs the
/// command only while the token is the fence's current value; otherwise a `FENCED` error.
pub const FENCED: Script = Script {
    name: "fenced",
    lua: "if redis.call('GET', KEYS[1]) ~= ARGV[1] then \
return redis.error_reply('FENCED the lease was taken over: stale token') end \
return redis.call(unpack(ARGV, 2))",
};

/// KEYS: pending hash, batch hash, batches zset. ARGV: batch id, lease deadline (ms). Moves the
/// pending deltas into a new batch, leased to the caller until the deadline. 1, or 0 when there
/// was nothing pending.
pub const BATCH: Script = Script {
    name: "batch",
    lua: "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
redis.call('RENAME', KEYS[1], KEYS[2]) \
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) \
return 1",
};

/// KEYS: claims zset (member -> lease deadline ms). ARGV: now ms, new deadline, limit. Re-leases
/// up to `limit` members whose lease passed and returns them.
pub const RECLAIM: Script = Script {
    name: "reclaim",
    lua: "local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3]) \
for _, x in ipairs(m) do redis.call('ZADD', KEYS[1], ARGV[2], x) end \
return m",
};

/// KEYS: due zset (member -> due unix s), claims zset, claimed hash (member -> due). ARGV: now
/// s, now ms, new deadline ms, limit. Claims up to `limit` due members (moved from the due set
/// into the claims, leased until the deadline) and re-leases claims whose lease passed (their
/// holder died). Returns member, due, member, due, ...
pub const CLAIM: Script = Script {
    name: "claim",
    lua: "local out = {} \
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4]) \
for _, m in ipairs(stale) do \
redis.call('ZADD', KEYS[2], ARGV[3], m) \
table.insert(out, m) table.insert(out, redis.call('HGET', KEYS[3], m) or '0') end \
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4]) \
for i = 1, #due, 2 do \
redis.call('ZREM', KEYS[1], due[i]) \
redis.call('ZADD', KEYS[2], ARGV[3], due[i]) \
redis.call('HSET', KEYS[3], due[i], due[i + 1]) \
table.insert(out, due[i]) table.insert(out, due[i + 1]) end \
return out",
};

/// Every script, for the embedded store's lookup and the tests.
pub const ALL: &[&Script] = &[&COUNT, &LEASE, &RELEASE, &FENCED, &BATCH, &RECLAIM, &CLAIM];

/// The script whose body is exactly `body`.
pub fn by_body(body: &[u8]) -> Option<&'static Script> {
    ALL.iter().copied().find(|s| s.lua.as_bytes() == body)
}

impl Script {
    /// `EVAL <body> <nkeys> keys... args...`.
    pub fn call<K, A>(&self, keys: K, args: A) -> Vec<Bytes>
    where
        K: IntoIterator<Item = Bytes>,
        A: IntoIterator<Item = Bytes>,
    {
        let keys: Vec<Bytes> = keys.into_iter().collect();
        let mut v = Vec::with_capacity(3 + keys.len());
        v.push(Bytes::from_static(b"EVAL"));
        v.push(Bytes::from_static(self.lua.as_bytes()));
        v.push(Bytes::from(keys.len().to_string()));
        v.extend(keys);
        v.extend(args);
        v
    }
}
