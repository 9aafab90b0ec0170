//! Who a client is: AUTH and HELLO (the proxy's own password and users, separate from the
//! upstream's credentials), CLIENT SETNAME's name, and the access check every command passes
//! (authentication, the deny list, the user's command rules).

use super::*;

impl Session {
    /// Authentication, the deny list, and the user's command rules.
    pub(super) fn check_access(&self, cmd: &Command) -> Result<(), Value> {
        let name = cmd.known_name();
        if !self.authed && !matches!(name, Some("auth" | "hello" | "quit")) {
            return Err(Value::err("NOAUTH Authentication required."));
        }
        if cmd.spec.is_some() {
            if let Some(e) = self.cur.deny.refusal(cmd) {
                return Err(Value::err(e));
            }
        }
        if let Some(name) = &self.user {
            // The user's rules as configured now: a reload may have changed or removed them.
            let auth = self.sh.auth.load();
            let allowed = auth
                .user(name.as_bytes())
                .is_some_and(|u| u.rules.allows(cmd.spec));
            if !allowed {
                return Err(noperm(name, cmd));
            }
        }
        Ok(())
    }

    pub(super) fn auth(&mut self, cmd: &Command) -> Value {
        match cmd.args.len() {
            2 => self.authenticate(None, &cmd.args[1]),
            3 => self.authenticate(Some(&cmd.args[1]), &cmd.args[2]),
            _ => Value::err("ERR wrong number of arguments for 'auth' command"),
        }
    }

    /// Checks a password (for the default user when `user` is None or "default").
    pub(super) fn authenticate(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Value {
        let auth = self.sh.auth.load();
        let default = user.is_none_or(|u| u == b"default");
        if default {
            if auth.password.is_empty() && user.is_none() {
                return Value::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            }
            if auth.password.is_empty() || auth.password.as_bytes() == pass {
                self.authed = true;
                self.user = None;
                self.entry.set_user("default");
                return Value::ok();
            }
        } else if let Some(u) = user.and_then(|n| auth.user(n)) {
            if u.password.as_bytes() == pass {
                self.authed = true;
                self.user = Some(u.name.clone());
                self.entry.set_user(&u.name);
                return Value::ok();
            }
        }
        Value::err("WRONGPASS invalid username-password pair or user is disabled.")
    }

    pub(super) fn hello(&mut self, cmd: &Command) -> Value {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(v) = cmd.args.get(1) {
            proto = match &v[..] {
                b"2" => Proto::Resp2,
                b"3" => Proto::Resp3,
                _ if std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_none() =>
                {
                    return Value::err("ERR Protocol version is not an integer or out of range")
                }
                _ => return Value::err("NOPROTO unsupported protocol version"),
            };
            i = 2;
        }
        let mut name = None;
        while i < cmd.args.len() {
            if cmd.arg_is(i, "auth") && i + 2 < cmd.args.len() {
                let r = self.authenticate(Some(&cmd.args[i + 1]), &cmd.args[i + 2]);
                if matches!(r, Value::Error(_)) {
                    return r;
                }
                i += 3;
            } else if cmd.arg_is(i, "setname") && i + 1 < cmd.args.len() {
                name = Some(cmd.args[i + 1].clone());
                i += 2;
            } else {
                return Value::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&cmd.args[i])
                ));
            }
        }
        if !self.authed {
            return Value::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(n) = name {
            if let Err(e) = self.set_name(&n) {
                return e;
            }
        }
        if proto != self.proto {
            // A dedicated connection speaks the old protocol; its state cannot move.
            self.release_dedicated(true);
            self.proto = proto;
            self.entry
                .resp
                .store(proto.number() as u32, Ordering::Relaxed);
        }
        let version = self.sh.upstream.connector.health.version();
        Value::Map(vec![
            (Value::text("server"), Value::text("redis")),
            (
                Value::text("version"),
                Value::text(if version.is_empty() {
                    "7.0.0"
                } else {
                    &version
                }),
            ),
            (Value::text("proto"), Value::Int(proto.number())),
            (Value::text("id"), Value::Int(self.entry.id as i64)),
            (Value::text("mode"), Value::text("standalone")),
            (Value::text("role"), Value::text("master")),
            (Value::text("modules"), Value::Array(vec![])),
        ])
    }

    pub(super) fn set_name(&mut self, name: &[u8]) -> Result<(), Value> {
        if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
            return Err(Value::err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.entry.set_name(&String::from_utf8_lossy(name));
        if self.sh.tracker.wants_name() {
            self.track_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
        }
        Ok(())
    }
}

fn noperm(user: &str, cmd: &Command) -> Value {
    Value::err(format!(
        "NOPERM User {user} has no permissions to run the '{}' command",
        String::from_utf8_lossy(cmd.name()).to_lowercase()
    ))
}
