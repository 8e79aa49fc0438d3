//! The unwrapped writer: the live stream without checkpoints. A single command goes as it is, a source
//! transaction as `MULTI`/.../`EXEC`. Nothing is chained: a job without checkpoints cannot resume exactly, it
//! only copies.

use bytes::Bytes;
use ferry_resp::Frame;
use tracing::warn;

use crate::error::Error;
use crate::pipeline::Unit;
use crate::sink::{target_error, ErrorPolicy, SinkCounters, Writer};

/// What the reply to an unwrapped command must be.
#[derive(Debug)]
pub(crate) enum Pending {
    /// `+OK` of a `SELECT` outside a transaction, or of `MULTI`.
    Ok { what: &'static str },
    /// A command outside a transaction that covers the source up to `end_offset`.
    Plain { name: String, end_offset: u64 },
    /// `+QUEUED` inside a transaction (`SELECT`s included).
    Queued { name: String },
    /// The reply to `EXEC`: one entry per queued command (`None` for a `SELECT` of ours).
    Exec {
        names: Vec<Option<String>>,
        end_offset: u64,
    },
}

/// Writes units without checkpoints and accounts for their replies.
#[derive(Debug)]
pub(crate) struct UnwrappedWriter {
    on_error: ErrorPolicy,
    /// The first command refused while queued in the current transaction.
    queue_error: Option<(String, String)>,
    committed: u64,
}

impl UnwrappedWriter {
    /// A writer with error policy `on_error`.
    pub(crate) fn new(on_error: ErrorPolicy) -> UnwrappedWriter {
        UnwrappedWriter {
            on_error,
            queue_error: None,
            committed: 0,
        }
    }

    /// The highest offset the target acknowledged.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Records an offset known to be in the target.
    pub(crate) fn set_committed(&mut self, offset: u64) {
        self.committed = self.committed.max(offset);
    }

    /// The commands for `unit`, with the `SELECT`s they need from database `*db` (updated).
    pub(crate) fn unit(&self, unit: Unit, db: &mut i64) -> Vec<(Vec<Bytes>, Pending)> {
        let end_offset = unit.end_offset;
        let select = |db: i64| vec![Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
        let mut out = Vec::new();
        if !unit.transaction {
            for cmd in unit.commands {
                if cmd.db != *db {
                    out.push((select(cmd.db), Pending::Ok { what: "SELECT" }));
                    *db = cmd.db;
                }
                let name = cmd.name();
                out.push((cmd.argv, Pending::Plain { name, end_offset }));
            }
            return out;
        }
        out.push((
            vec![Bytes::from_static(b"MULTI")],
            Pending::Ok { what: "MULTI" },
        ));
        let mut names = Vec::new();
        for cmd in unit.commands {
            if cmd.db != *db {
                out.push((
                    select(cmd.db),
                    Pending::Queued {
                        name: "select".into(),
                    },
                ));
                names.push(None);
                *db = cmd.db;
            }
            let name = cmd.name();
            names.push(Some(name.clone()));
            out.push((cmd.argv, Pending::Queued { name }));
        }
        out.push((
            vec![Bytes::from_static(b"EXEC")],
            Pending::Exec { names, end_offset },
        ));
        out
    }

    fn error(
        &self,
        command: &str,
        message: &[u8],
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        let error = target_error(counters, command, message);
        match self.on_error {
            ErrorPolicy::Stop => Err(error),
            ErrorPolicy::Log => {
                warn!(command, %error, "the target refused a write (error policy: log)");
                Ok(())
            }
        }
    }

    fn on_exec(
        &mut self,
        reply: Frame,
        names: Vec<Option<String>>,
        end_offset: u64,
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        let items = match reply {
            Frame::Array(items) => items,
            Frame::Error(e) => {
                // A command was refused when queued (EXECABORT): nothing of the transaction was applied, and
                // skipping it would reorder writes, so the job stops (even with the error policy `log`).
                let (command, message) = self
                    .queue_error
                    .take()
                    .unwrap_or_else(|| ("exec".into(), String::from_utf8_lossy(&e).into_owned()));
                counters.last_error = Some(format!("{command}: {message}"));
                return Err(Error::Target { command, message });
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected reply to EXEC: {other:?}"
                )))
            }
        };
        if items.len() != names.len() {
            return Err(Error::Protocol(format!(
                "EXEC answered {} replies for {} commands",
                items.len(),
                names.len()
            )));
        }
        for (item, name) in items.iter().zip(&names) {
            match (item, name) {
                (Frame::Error(e), Some(name)) => self.error(name, e, counters)?,
                (Frame::Error(e), None) => return Err(target_error(counters, "SELECT", e)),
                (_, Some(_)) => counters.commands_applied += 1,
                (_, None) => {}
            }
        }
        self.committed = self.committed.max(end_offset);
        Ok(())
    }
}

impl Writer for UnwrappedWriter {
    type Pending = Pending;

    fn on_reply(
        &mut self,
        pending: Pending,
        reply: Frame,
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        match pending {
            Pending::Ok { what } => match &reply {
                Frame::Error(e) => Err(target_error(counters, what, e)),
                _ => Ok(()),
            },
            Pending::Plain { name, end_offset } => {
                if let Frame::Error(e) = &reply {
                    self.error(&name, e, counters)?;
                } else {
                    counters.commands_applied += 1;
                }
                self.committed = self.committed.max(end_offset);
                Ok(())
            }
            Pending::Queued { name } => {
                if let Frame::Error(e) = &reply {
                    counters.errors += 1;
                    if self.queue_error.is_none() {
                        self.queue_error = Some((name, String::from_utf8_lossy(e).into_owned()));
                    }
                }
                Ok(())
            }
            Pending::Exec { names, end_offset } => self.on_exec(reply, names, end_offset, counters),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Command;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn txn() -> Unit {
        let cmd = |db, argv: &[&str]| Command {
            db,
            argv: argv.iter().map(|a| b(a)).collect(),
            end_offset: 50,
        };
        Unit {
            commands: vec![cmd(0, &["INCR", "a"]), cmd(2, &["BOGUS"])],
            transaction: true,
            end_offset: 50,
            end_db: 2,
            report: Vec::new(),
        }
    }

    /// Feeds `replies` to the pendings of `unit`, in order; the first error wins.
    fn run(
        w: &mut UnwrappedWriter,
        unit: Unit,
        replies: Vec<Frame>,
        c: &mut SinkCounters,
    ) -> Result<(), Error> {
        let mut db = 0;
        let out = w.unit(unit, &mut db);
        assert_eq!(out.len(), replies.len());
        for ((_, p), r) in out.into_iter().zip(replies) {
            w.on_reply(p, r, c)?;
        }
        Ok(())
    }

    #[test]
    fn transaction_is_wrapped_with_its_selects() {
        let w = UnwrappedWriter::new(ErrorPolicy::Stop);
        let mut db = 0;
        let names: Vec<String> = w
            .unit(txn(), &mut db)
            .iter()
            .map(|(argv, _)| String::from_utf8_lossy(&argv[0]).into_owned())
            .collect();
        assert_eq!(names, ["MULTI", "INCR", "SELECT", "BOGUS", "EXEC"]);
        assert_eq!(db, 2);
    }

    #[test]
    fn execabort_stops_with_the_command_refused_when_queued() {
        let mut w = UnwrappedWriter::new(ErrorPolicy::Log);
        let mut c = SinkCounters::default();
        let ok = Frame::Simple(b("OK"));
        let queued = Frame::Simple(b("QUEUED"));
        let replies = vec![
            ok,
            queued.clone(),
            queued,
            Frame::Error(b("ERR unknown command 'BOGUS'")),
            Frame::Error(b(
                "EXECABORT Transaction discarded because of previous errors.",
            )),
        ];
        let err = run(&mut w, txn(), replies, &mut c).unwrap_err();
        assert!(
            matches!(&err, Error::Target { command, message } if command == "bogus" && message.contains("unknown command")),
            "{err}"
        );
        assert_eq!((c.commands_applied, c.errors, w.committed()), (0, 1, 0));
    }

    #[test]
    fn runtime_error_inside_exec_follows_the_error_policy() {
        let replies = || {
            let queued = Frame::Simple(b("QUEUED"));
            vec![
                Frame::Simple(b("OK")),
                queued.clone(),
                queued.clone(),
                queued,
                Frame::Array(vec![
                    Frame::Integer(1),
                    Frame::Simple(b("OK")),
                    Frame::Error(b("WRONGTYPE Operation against a key")),
                ]),
            ]
        };
        let mut c = SinkCounters::default();
        let mut log = UnwrappedWriter::new(ErrorPolicy::Log);
        run(&mut log, txn(), replies(), &mut c).unwrap();
        assert_eq!((c.commands_applied, c.errors, log.committed()), (1, 1, 50));
        let mut stop = UnwrappedWriter::new(ErrorPolicy::Stop);
        assert!(run(&mut stop, txn(), replies(), &mut c).is_err());
    }
}
