//! The full-sync writer: keys of the RDB as `RESTORE`s, small strings as `MSET`/`MSETNX`, big values as element
//! commands. No transaction and no checkpoint per key: the RDB is not resumable, so the sink stores a
//! `fullsync` marker first and the checkpoint only once every key is acknowledged.

use bytes::Bytes;
use ferry_resp::Frame;
use tracing::warn;

use crate::error::{Error, KeyDisplay};
use crate::pipeline::convert::ConflictPolicy;
use crate::sink::strings::{self, StringGroup};
use crate::sink::{target_error, ErrorPolicy, SinkCounters, Writer};

/// What the reply to a full-sync command must be.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A `RESTORE` of `key`.
    Restore { key: Bytes },
    /// `MSET` (`nx` is `None`) or `MSETNX` of `count` small strings in database `db`; for `MSETNX` the
    /// arguments are kept (wire form, see [`strings::pairs`]) to find the existing keys one by one if it is
    /// refused.
    Strings {
        db: i64,
        count: u64,
        nx: Option<Bytes>,
    },
    /// `SET key value NX` after a refused `MSETNX`.
    SetNx { key: Bytes },
    /// An element command of a big key, an expiry, a `FUNCTION LOAD`.
    Element { name: String },
}

/// A command to write after a reply: database, arguments, what its reply must be.
pub(crate) type Followup = (i64, Vec<Bytes>, Pending);

/// Accounts for the replies of a full sync.
#[derive(Debug)]
pub(crate) struct RestoreWriter {
    /// Keys that exist on the target.
    pub(crate) conflict: ConflictPolicy,
    on_error: ErrorPolicy,
    /// Commands to write because of a reply (`SET NX` after a refused `MSETNX`).
    followups: Vec<Followup>,
}

impl RestoreWriter {
    /// A writer with conflict policy `panic` until a full sync sets one.
    pub(crate) fn new(on_error: ErrorPolicy) -> RestoreWriter {
        RestoreWriter {
            conflict: ConflictPolicy::Panic,
            on_error,
            followups: Vec::new(),
        }
    }

    /// The `MSET`/`MSETNX` for `group` (by the conflict policy), in wire form (head and arguments), and what
    /// its reply must be.
    pub(crate) fn strings(&self, group: StringGroup) -> (Bytes, Bytes, Pending) {
        let rewrite = self.conflict == ConflictPolicy::Rewrite;
        let db = group.db;
        let (head, args, count) = group.command(!rewrite);
        let nx = (!rewrite).then(|| args.clone());
        let pending = Pending::Strings {
            db,
            count: count as u64,
            nx,
        };
        (head, args, pending)
    }

    /// Commands the replies so far call for.
    pub(crate) fn take_followups(&mut self) -> Vec<Followup> {
        std::mem::take(&mut self.followups)
    }

    /// A key of the full sync that exists on the target: skipped or an error, by the conflict policy.
    fn key_exists(&self, key: &Bytes, counters: &mut SinkCounters) -> Result<(), Error> {
        if self.conflict == ConflictPolicy::Skip {
            counters.keys_skipped += 1;
            return Ok(());
        }
        counters.errors += 1;
        Err(Error::Conflict {
            key: KeyDisplay(key.to_vec()),
        })
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
}

impl Writer for RestoreWriter {
    type Pending = Pending;

    fn on_reply(
        &mut self,
        pending: Pending,
        reply: Frame,
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        match pending {
            Pending::Restore { key } => match &reply {
                Frame::Error(e) if e.starts_with(b"BUSYKEY") => self.key_exists(&key, counters),
                // The key is named: a refused payload ("Bad data format") is about one key of the source.
                Frame::Error(e) => self.error(
                    &format!("RESTORE {}", KeyDisplay(key.to_vec())),
                    e,
                    counters,
                ),
                _ => {
                    counters.keys_restored += 1;
                    Ok(())
                }
            },
            Pending::Strings { db, count, nx } => match (&reply, nx) {
                (Frame::Error(e), _) => self.error("mset", e, counters),
                (_, None) => {
                    counters.keys_restored += count;
                    Ok(())
                }
                (r, Some(_)) if r.as_integer() == Some(1) => {
                    counters.keys_restored += count;
                    Ok(())
                }
                (_, Some(args)) => {
                    // Some key exists: find which, one by one.
                    for (key, value) in strings::pairs(&args) {
                        let argv = vec![
                            Bytes::from_static(b"SET"),
                            key.clone(),
                            value,
                            Bytes::from_static(b"NX"),
                        ];
                        self.followups.push((db, argv, Pending::SetNx { key }));
                    }
                    Ok(())
                }
            },
            Pending::SetNx { key } => match &reply {
                Frame::Error(e) => self.error("set", e, counters),
                r if r.is_null() => self.key_exists(&key, counters),
                _ => {
                    counters.keys_restored += 1;
                    Ok(())
                }
            },
            Pending::Element { name } => match &reply {
                Frame::Error(e) => self.error(&name, e, counters),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Bytes {
        Bytes::from(k.to_string())
    }

    #[test]
    fn restore_replies_count_keys_and_conflicts_by_policy() {
        let mut w = RestoreWriter::new(ErrorPolicy::Stop);
        let mut c = SinkCounters::default();
        w.on_reply(
            Pending::Restore { key: key("a") },
            Frame::Simple(key("OK")),
            &mut c,
        )
        .unwrap();
        let busy = Frame::Error(key("BUSYKEY Target key name already exists."));
        let err = w
            .on_reply(Pending::Restore { key: key("b") }, busy.clone(), &mut c)
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        w.conflict = ConflictPolicy::Skip;
        w.on_reply(Pending::Restore { key: key("b") }, busy, &mut c)
            .unwrap();
        assert_eq!((c.keys_restored, c.keys_skipped, c.errors), (1, 1, 1));
    }

    #[test]
    fn refused_msetnx_is_retried_key_by_key() {
        let mut w = RestoreWriter::new(ErrorPolicy::Stop);
        w.conflict = ConflictPolicy::Skip;
        let mut c = SinkCounters::default();
        let mut group = StringGroup::new(3, 0);
        group.push(b"a", b"1");
        group.push(b"b", b"2");
        let (head, _, pending) = w.strings(group);
        assert!(head.ends_with(b"MSETNX\r\n"));
        w.on_reply(pending, Frame::Integer(0), &mut c).unwrap();
        let follow = w.take_followups();
        assert_eq!(follow.len(), 2);
        assert!(follow
            .iter()
            .all(|(db, argv, _)| *db == 3 && argv[3] == "NX"));
        let mut replies = [Frame::Simple(key("OK")), Frame::Null].into_iter();
        for (_, _, p) in follow {
            w.on_reply(p, replies.next().unwrap(), &mut c).unwrap();
        }
        assert_eq!((c.keys_restored, c.keys_skipped), (1, 1));
    }

    #[test]
    fn element_errors_follow_the_error_policy() {
        let mut c = SinkCounters::default();
        let oom = Frame::Error(key("OOM command not allowed"));
        let mut stop = RestoreWriter::new(ErrorPolicy::Stop);
        let p = || Pending::Element {
            name: "rpush".into(),
        };
        assert!(stop.on_reply(p(), oom.clone(), &mut c).is_err());
        let mut log = RestoreWriter::new(ErrorPolicy::Log);
        log.on_reply(p(), oom, &mut c).unwrap();
        assert_eq!(c.errors, 2);
        assert_eq!(
            c.last_error.as_deref(),
            Some("rpush: OOM command not allowed")
        );
    }
}
