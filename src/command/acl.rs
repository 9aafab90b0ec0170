//! Client-side access control: the proxy's password and optional users, each with command
//! rules in Redis ACL style (`+@all`, `+@read`, `+get`, `-@admin`, `-flushall`), applied in
//! order, later rules winning. The denied-command list for everyone lives in `Denylist`.

use serde::{Deserialize, Serialize};

use crate::command::{self, cat, CommandSpec};

/// A user's rules as configured (`auth.users[].commands`): the text, kept so the settings print
/// back as written, and the rules it parses to, once, at load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct CommandRules {
    text: Vec<String>,
    rules: Rules,
}

impl CommandRules {
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

impl TryFrom<Vec<String>> for CommandRules {
    type Error = String;
    fn try_from(text: Vec<String>) -> Result<Self, String> {
        let rules = Rules::parse(&text)?;
        Ok(CommandRules { text, rules })
    }
}

impl From<CommandRules> for Vec<String> {
    fn from(r: CommandRules) -> Vec<String> {
        r.text
    }
}

/// One user's command rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<(bool, Target)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Category(u32),
    Command(&'static str),
}

impl Rules {
    /// Parses rules; the error names the rule that is not understood.
    pub fn parse(rules: &[String]) -> Result<Rules, String> {
        let mut out = Vec::new();
        for r in rules {
            let (allow, rest) = match r.as_bytes().first() {
                Some(b'+') => (true, &r[1..]),
                Some(b'-') => (false, &r[1..]),
                _ => return Err(format!("rule '{r}' must start with + or -")),
            };
            let target = if let Some(c) = rest.strip_prefix('@') {
                Target::Category(cat::by_name(c).ok_or_else(|| format!("unknown category '@{c}'"))?)
            } else {
                let spec = command::lookup(rest.as_bytes())
                    .ok_or_else(|| format!("unknown command '{rest}'"))?;
                Target::Command(spec.name)
            };
            out.push((allow, target));
        }
        Ok(Rules { rules: out })
    }

    /// Whether the rules allow `spec`. Commands the table does not know are allowed only
    /// under `+@all`.
    pub fn allows(&self, spec: Option<&'static CommandSpec>) -> bool {
        let mut allowed = false;
        for (allow, t) in &self.rules {
            let hit = match (t, spec) {
                (Target::Category(c), Some(s)) => *c == u32::MAX || s.categories & c != 0,
                (Target::Category(c), None) => *c == u32::MAX,
                (Target::Command(n), Some(s)) => *n == s.name,
                (Target::Command(_), None) => false,
            };
            if hit {
                allowed = *allow;
            }
        }
        allowed
    }
}

/// Commands refused to every client, as `name` or `name|subcommand`, kept per table row so
/// the check on every request is an index, not a scan of names.
#[derive(Debug, Clone, Default)]
pub struct Denylist {
    /// Per command-table row: the whole command, or these subcommands (lower case).
    rows: Vec<(bool, Vec<String>)>,
}

impl Denylist {
    pub fn new(entries: &[String]) -> Denylist {
        let mut rows = vec![(false, Vec::new()); command::all().len()];
        for e in entries {
            let mut parts = e.splitn(2, '|');
            let name = parts.next().unwrap_or("");
            let Some(spec) = command::lookup(name.as_bytes()) else {
                continue; // validated at config load
            };
            let row = &mut rows[command::index_of(spec)];
            match parts.next() {
                Some(sub) => row.1.push(sub.to_ascii_lowercase()),
                None => row.0 = true,
            }
        }
        Denylist { rows }
    }

    /// The denied entry a command (its subcommand as sent) matches.
    /// The error a refused command gets (the same text wherever it is refused), or None when
    /// `cmd` may run.
    pub fn refusal(&self, cmd: &command::Command) -> Option<String> {
        let what = self.check(cmd.spec?, cmd.args.get(1).map(|b| &b[..]))?;
        Some(format!(
            "ERR command '{what}' is disabled by the proxy (server.deny_commands)"
        ))
    }

    pub fn check(&self, spec: &'static CommandSpec, sub: Option<&[u8]>) -> Option<String> {
        let (whole, subs) = self.rows.get(command::index_of(spec))?;
        if *whole {
            return Some(spec.name.to_string());
        }
        let sub = sub?;
        subs.iter()
            .find(|s| sub.eq_ignore_ascii_case(s.as_bytes()))
            .map(|s| format!("{}|{s}", spec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> Rules {
        Rules::parse(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn rules_apply_in_order() {
        let r = rules(&["+@read", "-hgetall", "+set"]);
        assert!(r.allows(command::lookup(b"get")));
        assert!(!r.allows(command::lookup(b"hgetall")));
        assert!(r.allows(command::lookup(b"set")));
        assert!(!r.allows(command::lookup(b"del")));
        assert!(!r.allows(None));
        let all = rules(&["+@all", "-@admin"]);
        assert!(all.allows(None));
        assert!(!all.allows(command::lookup(b"shutdown")));
        assert!(Rules::parse(&["get".into()]).is_err());
        assert!(Rules::parse(&["+@nosuch".into()]).is_err());
    }

    #[test]
    fn denylist_matches_commands_and_subcommands() {
        let d = Denylist::new(&["shutdown".into(), "config|set".into()]);
        let spec = |n: &str| command::lookup(n.as_bytes()).unwrap();
        assert_eq!(d.check(spec("shutdown"), None).as_deref(), Some("shutdown"));
        assert_eq!(
            d.check(spec("config"), Some(b"SET")).as_deref(),
            Some("config|set")
        );
        assert_eq!(d.check(spec("config"), Some(b"get")), None);
        assert_eq!(d.check(spec("get"), None), None);
    }
}
