//! The scan source, for servers that refuse `PSYNC` (managed services): `SCAN` each database and read each
//! key with `DUMP` + `PEXPIRETIME` (`PTTL` before 7.0; pipelined, one batch of keys at a time), then follow
//! changes by keyspace notifications, re-reading each changed key the same way. A cluster source is read
//! master by master, with a subscriber on each (notifications are local to the node owning the key).
//!
//! The notifications are subscribed to before the scan starts, so a key changed while the scan runs is read
//! again after it (`SCAN` itself may miss a key created during the scan; its notification is not missed). A key
//! is re-read, not replayed: the target gets the value the key has when it is read, and a key read again after
//! its last change ends equal. A key found gone is deleted on the target.
//!
//! # Limits (what a scan source cannot promise)
//!
//! Keyspace notifications are fire-and-forget pub/sub messages. They are lost when the subscriber connection
//! drops (a network fault, a restart or failover of the source) or when the server disconnects it because its
//! pub/sub output buffer reached `client-output-buffer-limit pubsub` (a burst of writes faster than ferry
//! drains them). ferry notices both (the connection ends) and starts over with a new full scan, since it
//! cannot know what it missed. A server whose notifications are off (`notify-keyspace-events` without `K` and
//! `A`) sends none: ferry turns them on with `CONFIG SET` when allowed, and otherwise requires them and says
//! so. Keys that change faster than they are re-read reach the target only in their latest state (no
//! intermediate states, no `MULTI` grouping across keys); the target is never ahead of the source but is
//! consistent per key, not per transaction. Nothing is checkpointed: a restarted job scans again. A `verify`
//! at the end of the copy (the façade runs one) is the proof that the copy is complete.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::now_ms;
use crate::error::Error;

/// How the scan source reads the source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOptions {
    /// Only these databases (all that hold keys when the scan starts, when `None`).
    pub dbs: Option<Vec<i64>>,
    /// Follow changes with keyspace notifications after the scan (the job then runs until stopped); without
    /// them the job ends when the scan is copied.
    pub notifications: bool,
    /// Keys per `SCAN ... COUNT` and per pipelined batch of `DUMP` + expiry reads.
    pub batch: usize,
    /// The source is a Redis Cluster (the endpoint any node of it): every master is scanned and subscribed
    /// to (keyspace notifications are local to the node that owns the key).
    pub cluster: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            dbs: None,
            notifications: true,
            batch: 256,
            cluster: false,
        }
    }
}

impl ScanOptions {
    /// Only these databases (`None`: every database holding keys).
    pub fn with_dbs(mut self, dbs: Option<Vec<i64>>) -> ScanOptions {
        self.dbs = dbs;
        self
    }

    /// The source is a Redis Cluster: scan and follow every master.
    pub fn with_cluster(mut self, on: bool) -> ScanOptions {
        self.cluster = on;
        self
    }

    /// Follow keyspace notifications after the scan, or end with the copy.
    pub fn with_notifications(mut self, on: bool) -> ScanOptions {
        self.notifications = on;
        self
    }
}

/// A key read from the source: its `DUMP` payload and absolute expiry, or gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// The key exists.
    Value {
        /// The `DUMP` payload.
        payload: Bytes,
        /// Absolute expiry, Unix ms.
        expire_at_ms: Option<i64>,
    },
    /// The key does not exist (deleted or expired).
    Gone,
}

/// The connection that reads keys.
pub(crate) struct Reader {
    conn: Connection,
    db: i64,
    /// The source answers `PEXPIRETIME` (7.0+): expiries are read as the source's absolute times, not
    /// computed from `PTTL` and the local clock.
    absolute_expiry: bool,
}

impl Reader {
    /// Connects to the source.
    pub(crate) async fn connect(opts: &ConnectOptions) -> Result<Reader, Error> {
        let mut conn = Connection::connect(opts).await?;
        // The Redis version: Valkey's `redis_version` (7.2.4) says what matters here (PEXPIRETIME).
        let text = ferry_resp::probe::info_server(&mut conn).await?;
        let major = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .and_then(|v| v.trim().split('.').next()?.parse::<u32>().ok())
            .unwrap_or(0);
        Ok(Reader {
            conn,
            db: opts.db,
            absolute_expiry: major >= 7,
        })
    }

    /// The databases to scan (`wanted`, or those `INFO keyspace` lists) and their key counts.
    pub(crate) async fn keyspace(
        &mut self,
        wanted: Option<&[i64]>,
    ) -> Result<Vec<(i64, u64)>, Error> {
        let listed = ferry_resp::probe::keyspace(&mut self.conn, self.db).await?;
        Ok(match wanted {
            Some(dbs) => dbs
                .iter()
                .map(|&db| {
                    let keys = listed.iter().find(|(d, _)| *d == db).map_or(0, |(_, k)| *k);
                    (db, keys)
                })
                .collect(),
            None => listed,
        })
    }

    /// The code of each function library (`FUNCTION LIST WITHCODE`; none before 7.0).
    pub(crate) async fn functions(&mut self) -> Result<Vec<Bytes>, Error> {
        if !self.absolute_expiry {
            return Ok(Vec::new());
        }
        let reply = self.conn.call(&["FUNCTION", "LIST", "WITHCODE"]).await?;
        let mut out = Vec::new();
        for library in reply.into_array().unwrap_or_default() {
            // Each library is a map (RESP3) or a flat array of name, value pairs (RESP2).
            let fields = match library {
                Frame::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                other => other.into_array().unwrap_or_default(),
            };
            let mut it = fields.into_iter();
            while let (Some(name), Some(value)) = (it.next(), it.next()) {
                if name.as_bytes() == Some(b"library_code") {
                    if let Some(code) = owned_bytes(value) {
                        out.push(code);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn select(&mut self, db: i64) -> Result<(), Error> {
        if self.db != db {
            self.conn.call(&["SELECT", db.to_string().as_str()]).await?;
            self.db = db;
        }
        Ok(())
    }

    /// One `SCAN` step in `db`: the next cursor (0 at the end) and the keys.
    pub(crate) async fn scan(
        &mut self,
        db: i64,
        cursor: &[u8],
        count: usize,
    ) -> Result<(Bytes, Vec<Bytes>), Error> {
        self.select(db).await?;
        let count = count.to_string();
        let reply = self
            .conn
            .call(&[b"SCAN".as_slice(), cursor, b"COUNT", count.as_bytes()])
            .await?;
        let mut parts = reply
            .into_array()
            .ok_or_else(|| Error::Protocol("SCAN did not answer an array".into()))?
            .into_iter();
        let next = parts
            .next()
            .and_then(|f| f.as_bytes().map(Bytes::copy_from_slice))
            .ok_or_else(|| Error::Protocol("SCAN answered no cursor".into()))?;
        let keys = parts
            .next()
            .and_then(Frame::into_array)
            .ok_or_else(|| Error::Protocol("SCAN answered no keys".into()))?
            .into_iter()
            .filter_map(owned_bytes)
            .collect();
        Ok((next, keys))
    }

    /// `DUMP` and `PEXPIRETIME` (`PTTL` before 7.0) of each key of `db`, pipelined.
    pub(crate) async fn read(&mut self, db: i64, keys: &[Bytes]) -> Result<Vec<Read>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.select(db).await?;
        let ttl_command = match self.absolute_expiry {
            true => Bytes::from_static(b"PEXPIRETIME"),
            false => Bytes::from_static(b"PTTL"),
        };
        let mut cmds = Vec::with_capacity(keys.len() * 2);
        for k in keys {
            cmds.push(vec![Bytes::from_static(b"DUMP"), k.clone()]);
            cmds.push(vec![ttl_command.clone(), k.clone()]);
        }
        let replies = self.conn.pipeline(&cmds).await?;
        let base = if self.absolute_expiry { 0 } else { now_ms() };
        let mut out = Vec::with_capacity(keys.len());
        for (pair, key) in replies.chunks(2).zip(keys) {
            let (dump, ttl) = (&pair[0], &pair[1]);
            if let Frame::Error(e) = dump {
                if e.starts_with(b"MOVED") || e.starts_with(b"ASK") {
                    // A slot moved on the source: the keys of this node changed hands.
                    return Err(Error::SourceClosed(format!(
                        "a slot of the source moved ({}): scanning again",
                        String::from_utf8_lossy(e)
                    )));
                }
                return Err(Error::Refused(format!(
                    "DUMP of key {}: {}",
                    crate::KeyDisplay(key.to_vec()),
                    String::from_utf8_lossy(e)
                )));
            }
            let ttl = ttl.as_integer().unwrap_or(-1);
            out.push(match dump.as_bytes() {
                // Gone between the two reads: its notification brings it back if it returns.
                Some(_) if ttl == -2 => Read::Gone,
                Some(payload) => Read::Value {
                    payload: Bytes::copy_from_slice(payload),
                    expire_at_ms: (ttl >= 0).then(|| base + ttl),
                },
                None => Read::Gone,
            });
        }
        Ok(out)
    }
}

/// The masters of a cluster source, by any node of it (`CLUSTER SLOTS`); each with `seed`'s credentials and
/// database 0.
pub(crate) async fn cluster_masters(seed: &ConnectOptions) -> Result<Vec<ConnectOptions>, Error> {
    let mut conn = Connection::connect(seed).await?;
    let reply = conn.call(&["CLUSTER", "SLOTS"]).await?;
    let mut map = ferry_topology::SlotMap::from_cluster_slots(&reply)
        .map_err(|e| Error::Config(format!("the source's CLUSTER SLOTS: {e}")))?;
    map.fill_unknown_hosts(&seed.host);
    let masters: Vec<ConnectOptions> = map
        .shards()
        .iter()
        .map(|shard| {
            let mut o = seed.clone();
            o.host = shard.master.addr.host.clone();
            o.port = shard.master.addr.port;
            o.db = 0;
            o
        })
        .collect();
    if masters.is_empty() {
        return Err(Error::Config("the cluster source has no master".into()));
    }
    Ok(masters)
}

/// A bulk string's bytes as a [`Bytes`] (moved, not copied).
fn owned_bytes(frame: Frame) -> Option<Bytes> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        _ => None,
    }
}

/// Makes sure the source sends keyspace notifications for every change (`K` plus `A`, or each of the classes
/// `A` stands for): turns them on with `CONFIG SET` when they are not, and fails saying so when `CONFIG SET`
/// is refused.
pub(crate) async fn enable_notifications(conn: &mut Connection) -> Result<(), Error> {
    let current = match conn
        .call(&["CONFIG", "GET", "notify-keyspace-events"])
        .await
    {
        Ok(reply) => reply
            .into_array()
            .and_then(|v| {
                v.get(1)
                    .and_then(|f| f.as_bytes().map(Bytes::copy_from_slice))
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, "cannot read notify-keyspace-events (CONFIG GET refused): it must include `KA` \
                  on the source, or changes after the scan are missed");
            return Ok(());
        }
    };
    if covers_every_change(&current) {
        return Ok(());
    }
    let wanted = format!("{current}KA");
    match conn
        .call(&["CONFIG", "SET", "notify-keyspace-events", wanted.as_str()])
        .await
    {
        Ok(_) => {
            info!(before = %current, now = %wanted, "keyspace notifications turned on on the source");
            Ok(())
        }
        Err(e) => Err(Error::Refused(format!(
            "the scan source follows changes by keyspace notifications, which are off on the source \
             (notify-keyspace-events is {current:?}) and CONFIG SET was refused ({e}): set \
             notify-keyspace-events to include `KA` on the source, or turn notifications off for a one-time copy"
        ))),
    }
}

/// Whether a `notify-keyspace-events` value reports every change of every key on the keyspace channel.
fn covers_every_change(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "g$lshzxet".chars().all(|c| flags.contains(c)))
}

/// Keys changed on the source and not yet read again, in the order of their first change since the last read;
/// a key is held once however often it changed.
#[derive(Debug, Default)]
struct DirtyKeys {
    /// (node, db, key): the node whose notification named the key (0 for a standalone source).
    queue: VecDeque<(usize, i64, Bytes)>,
    set: HashSet<(usize, i64, Bytes)>,
    /// Why the subscriber ended (it never ends otherwise).
    ended: Option<String>,
}

/// The keyspace notifications of the source: a task per node reads them into one set of changed keys.
pub(crate) struct Notifications {
    dirty: Arc<Mutex<DirtyKeys>>,
    wake: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Notifications {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Notifications {
    /// Subscribes to the keyspace channels of `dbs` (every database when `None`) on each node and returns once
    /// every node confirmed the subscriptions: every change after that is reported.
    pub(crate) async fn subscribe(
        nodes: &[ConnectOptions],
        dbs: Option<&[i64]>,
    ) -> Result<Notifications, Error> {
        let dirty = Arc::new(Mutex::new(DirtyKeys::default()));
        let wake = Arc::new(Notify::new());
        let mut me = Notifications {
            dirty: dirty.clone(),
            wake: wake.clone(),
            tasks: Vec::new(),
        };
        for (node, opts) in nodes.iter().enumerate() {
            let mut conn = Connection::connect(opts).await?;
            enable_notifications(&mut conn).await?;
            let patterns: Vec<String> = match dbs {
                Some(dbs) => dbs.iter().map(|d| format!("__keyspace@{d}__:*")).collect(),
                None => vec!["__keyspace@*__:*".to_string()],
            };
            let mut argv = vec!["PSUBSCRIBE".to_string()];
            argv.extend(patterns.iter().cloned());
            conn.call(&argv).await?;
            for _ in 1..patterns.len() {
                conn.read_frame().await?;
            }
            conn.set_read_timeout(None);
            me.tasks.push(tokio::spawn(listen(
                conn,
                node,
                dirty.clone(),
                wake.clone(),
            )));
        }
        Ok(me)
    }

    /// Takes up to `max` changed keys of one database (the oldest first), waiting for one when there is none.
    /// Fails once the subscriber connection ended (changes may have been missed).
    pub(crate) async fn next_batch(&self, max: usize) -> Result<(usize, i64, Vec<Bytes>), Error> {
        loop {
            let woken = self.wake.notified();
            {
                let mut d = self.dirty.lock().map_err(|_| poisoned())?;
                if let Some((node, db, _)) = d.queue.front().cloned() {
                    let mut keys = Vec::new();
                    while keys.len() < max
                        && d.queue
                            .front()
                            .is_some_and(|(n, x, _)| (*n, *x) == (node, db))
                    {
                        if let Some(entry) = d.queue.pop_front() {
                            d.set.remove(&entry);
                            keys.push(entry.2);
                        }
                    }
                    return Ok((node, db, keys));
                }
                if let Some(why) = &d.ended {
                    return Err(Error::SourceClosed(format!(
                        "the keyspace notifications ended ({why}): changes may have been missed, scanning again"
                    )));
                }
            }
            woken.await;
        }
    }

    /// Changed keys waiting to be read.
    pub(crate) fn pending(&self) -> u64 {
        self.dirty.lock().map(|d| d.queue.len() as u64).unwrap_or(0)
    }
}

fn poisoned() -> Error {
    Error::Protocol("the notification queue's lock is poisoned".into())
}

/// Reads the notifications of node `node` until the connection ends, recording each changed key.
async fn listen(
    mut conn: Connection,
    node: usize,
    dirty: Arc<Mutex<DirtyKeys>>,
    wake: Arc<Notify>,
) {
    let ended = loop {
        let frame = match conn.read_frame().await {
            Ok(f) => f,
            Err(e) => break e.to_string(),
        };
        let Some(parts) = frame.into_array() else {
            continue;
        };
        // pmessage, pattern, channel, event
        let (Some(kind), Some(channel)) = (parts.first(), parts.get(2)) else {
            continue;
        };
        if kind.as_bytes() != Some(b"pmessage".as_slice()) {
            continue;
        }
        let Some((db, key)) = channel.as_bytes().and_then(parse_channel) else {
            continue;
        };
        if let Ok(mut d) = dirty.lock() {
            if d.set.insert((node, db, key.clone())) {
                d.queue.push_back((node, db, key));
            }
        }
        wake.notify_one();
    };
    warn!(reason = %ended, node, "the keyspace notification subscriber ended");
    if let Ok(mut d) = dirty.lock() {
        d.ended = Some(ended);
    }
    wake.notify_one();
}

/// The database and key of a keyspace channel, `__keyspace@<db>__:<key>`.
fn parse_channel(channel: &[u8]) -> Option<(i64, Bytes)> {
    let rest = channel.strip_prefix(b"__keyspace@")?;
    let end = rest.iter().position(|&b| b == b'_')?;
    let db = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let key = rest[end..].strip_prefix(b"__:")?;
    Some((db, Bytes::copy_from_slice(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_channels_give_the_database_and_the_binary_key() {
        assert_eq!(
            parse_channel(b"__keyspace@3__:user:1"),
            Some((3, Bytes::from_static(b"user:1")))
        );
        assert_eq!(
            parse_channel(b"__keyspace@0__:a__:b\xff"),
            Some((0, Bytes::from_static(b"a__:b\xff")))
        );
        assert_eq!(parse_channel(b"__keyevent@0__:set"), None);
    }

    #[test]
    fn notification_flags_must_cover_every_change_of_every_key() {
        assert!(covers_every_change("AK"));
        assert!(covers_every_change("KEA"));
        assert!(covers_every_change("g$lshzxetK"));
        assert!(!covers_every_change(""));
        assert!(!covers_every_change("A"));
        assert!(!covers_every_change("Kg$"));
    }
}
