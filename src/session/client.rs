//! CLIENT subcommands: those about the client itself are answered here (ID, GETNAME,
//! SETNAME, INFO, LIST, REPLY); those naming other clients are in peers.rs; the rest go to the
//! upstream with the client's connection state.

use super::*;

impl Session {
    pub(super) async fn client_command(
        &mut self,
        cmd: Command,
        start: Instant,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let sub = cmd.subcommand().unwrap_or_default();
        let argc = cmd.args.len();
        let arity_err = || {
            Value::err(format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ))
        };
        let v = match sub.as_str() {
            "id" if argc == 2 => Value::Int(self.entry.id as i64),
            "getname" if argc == 2 => match self.entry.name() {
                n if n.is_empty() => Value::Nil,
                n => Value::text(n),
            },
            "setname" if argc == 3 => match self.set_name(&cmd.args[2]) {
                Ok(()) => Value::ok(),
                Err(e) => e,
            },
            "setinfo" if argc == 4 => Value::ok(),
            "info" if argc == 2 => Value::Verbatim(format!("{}\n", self.entry.line())),
            "list" => Value::Verbatim(self.sh.clients.list()),
            "reply" if argc == 3 => {
                let mode = String::from_utf8_lossy(&cmd.args[2]).to_ascii_lowercase();
                match mode.as_str() {
                    "on" => {
                        self.reply_mode = ReplyMode::On;
                        Value::ok()
                    }
                    "off" | "skip" => {
                        self.reply_mode = if mode == "off" {
                            ReplyMode::Off
                        } else {
                            ReplyMode::Skip
                        };
                        // The CLIENT REPLY OFF/SKIP command itself gets no reply.
                        w.push(self.ready(&cmd, start, Value::ok(), Outcome::Ok));
                        w.suppress_last();
                        return Ok(());
                    }
                    _ => Value::err("ERR syntax error"),
                }
            }
            "kill" => {
                let (v, close) = self.kill(&cmd);
                self.close_after_reply |= close;
                v
            }
            "unblock" if argc == 3 || argc == 4 => match self.unblock(&cmd) {
                Ok(fwd) => {
                    let d = self.conn_for_state();
                    return self
                        .send(fwd, start, d, Wait::Deadline, Effect::None, w)
                        .await;
                }
                Err(v) => v,
            },
            "id" | "getname" | "setname" | "setinfo" | "info" | "reply" => arity_err(),
            "tracking" | "caching" | "trackinginfo" | "getredir" | "no-touch" | "no-evict" => {
                let cmd = if sub == "tracking" && argc >= 3 {
                    match self.tracking_redirect(&cmd) {
                        Ok(fwd) => fwd,
                        Err(v) => {
                            w.push(self.ready(&cmd, start, v, Outcome::Error));
                            return Ok(());
                        }
                    }
                } else {
                    cmd
                };
                self.st.sticky = true;
                return self
                    .send(cmd, start, Conn::Dedicated, Wait::Deadline, Effect::None, w)
                    .await;
            }
            _ => {
                let d = self.conn_for_state();
                return self
                    .send(cmd, start, d, Wait::Deadline, Effect::None, w)
                    .await;
            }
        };
        self.answer(&cmd, start, v, w);
        Ok(())
    }
}
