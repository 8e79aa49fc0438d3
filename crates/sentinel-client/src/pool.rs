//! [`SentinelPool`]: the pool, its master generation, and the guard that brings connections back.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ferry_resp::{Connection, Frame};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{broadcast, watch, Notify};

use crate::addr::Addr;
use crate::error::Error;
use crate::events::{Event, SwitchReason};
use crate::options::SentinelPoolOptions;
use crate::sentinel::{self, Role};

/// A connection-pool snapshot, for monitoring and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The master the pool writes to, if one is known right now (none during a failover).
    pub master: Option<Addr>,
    /// The current master generation (starts at 1, grows on every switch or demotion).
    pub generation: u64,
    /// Connections that exist: borrowed, idle, or being opened.
    pub total: usize,
    /// Idle connections.
    pub idle: usize,
    /// Borrowed connections (and ones being opened).
    pub active: usize,
    /// Connections opened to masters since the pool started.
    pub created: u64,
    /// Idle connections closed because the master changed.
    pub closed_on_switch: u64,
    /// Borrowed connections of an ended generation that were dropped when returned.
    pub discarded_on_return: u64,
    /// Connections dropped because they failed (I/O error, timeout, failed test-on-borrow).
    pub destroyed_broken: u64,
    /// Master switches seen (any reason).
    pub switches: u64,
    /// Background polls of the sentinels completed (answered or not).
    pub polls: u64,
    /// Sentinels followed, seeds first.
    pub sentinels: Vec<Addr>,
    /// Sentinels whose listener is currently subscribed.
    pub listeners_up: usize,
}

struct Idle {
    conn: Connection,
    addr: Addr,
    generation: u64,
}

#[derive(Default)]
struct State {
    master: Option<Addr>,
    last_master: Option<Addr>,
    generation: u64,
    demoted: HashMap<Addr, Instant>,
    /// The config epoch of `last_master`'s configuration, as the sentinels reported it (or, right
    /// after a switch announced by a message, the lowest it can be). An address is installed only
    /// with an epoch above it, or with the same epoch when it is `last_master` itself.
    epoch: Option<u64>,
    idle: VecDeque<Idle>,
    total: usize,
    closed: bool,
    created: u64,
    closed_on_switch: u64,
    discarded_on_return: u64,
    destroyed_broken: u64,
    switches: u64,
    polls: u64,
}

/// Whether answer `a` (position in the sentinel list, config epoch) beats answer `b`: the higher
/// epoch wins; on a tie, the sentinel earlier in the list.
fn prefers(a: (usize, u64), b: (usize, u64)) -> bool {
    a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
}

/// One slot of `max_total` taken for a connection being opened. Dropping it (the borrow failed, or
/// its future was dropped while connecting) gives the slot back; [`Reservation::keep`] hands it to
/// the connection that was opened.
struct Reservation {
    inner: Option<Arc<Inner>>,
}

impl Reservation {
    fn keep(mut self) {
        self.inner = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.release_slot();
        }
    }
}

/// Shared state of one pool; background tasks hold it weakly.
pub(crate) struct Inner {
    pub(crate) opts: Arc<SentinelPoolOptions>,
    state: Mutex<State>,
    /// Woken on every change a borrower may wait for: a connection returned, a slot freed, a master
    /// installed or demoted.
    changed: Notify,
    /// One resolve at a time; the others wait and reuse its answer.
    resolve_lock: tokio::sync::Mutex<()>,
    sentinels: Mutex<Vec<Addr>>,
    listeners: Mutex<HashMap<Addr, bool>>,
    events: broadcast::Sender<Event>,
    /// Wakes the poller early (missed events, READONLY, a listener that came back).
    pub(crate) poke: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    replica_rr: AtomicUsize,
    /// When `ResolveFailed` was last published (at most one a second, so a flood of failing
    /// borrows during an outage cannot push the switch event out of a subscriber's buffer).
    last_resolve_failed: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn new(opts: SentinelPoolOptions) -> Inner {
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        let (shutdown, _) = watch::channel(false);
        Inner {
            sentinels: Mutex::new(opts.sentinels.clone()),
            opts: Arc::new(opts),
            state: Mutex::new(State {
                generation: 1,
                ..State::default()
            }),
            changed: Notify::new(),
            resolve_lock: tokio::sync::Mutex::new(()),
            listeners: Mutex::new(HashMap::new()),
            events,
            poke: Arc::new(Notify::new()),
            shutdown,
            replica_rr: AtomicUsize::new(0),
            last_resolve_failed: Mutex::new(None),
        }
    }

    pub(crate) fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn emit_resolve_failed(&self, e: &Error) {
        {
            let mut last = lock(&self.last_resolve_failed);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.emit(Event::ResolveFailed {
            error: e.to_string(),
        });
    }

    pub(crate) fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    fn master(&self) -> Option<(Addr, u64)> {
        let st = lock(&self.state);
        st.master.clone().map(|m| (m, st.generation))
    }

    fn is_demoted(&self, addr: &Addr) -> bool {
        let st = lock(&self.state);
        st.demoted
            .get(addr)
            .map(|t| t.elapsed() < self.opts.demoted_hold)
            .unwrap_or(false)
    }

    /// Whether `addr` is held back as demoted although the sentinels name it at `epoch`: a
    /// configuration newer than the one followed (a later failover chose it) ends the hold.
    fn is_held(&self, addr: &Addr, epoch: u64) -> bool {
        self.is_demoted(addr) && lock(&self.state).epoch.is_none_or(|k| epoch <= k)
    }

    /// Whether `addr` at config epoch `epoch` is older than the configuration the pool follows.
    fn is_stale_in(st: &State, addr: &Addr, epoch: u64) -> bool {
        match st.epoch {
            None => false,
            Some(known) => {
                epoch < known || (epoch == known && st.last_master.as_ref() != Some(addr))
            }
        }
    }

    fn is_stale(&self, addr: &Addr, epoch: u64) -> bool {
        Self::is_stale_in(&lock(&self.state), addr, epoch)
    }

    /// The config epoch the pool follows, if one is known.
    fn epoch(&self) -> Option<u64> {
        lock(&self.state).epoch
    }

    /// Ends the current generation: idle connections close now, borrowed ones are discarded later.
    fn end_generation(st: &mut State) -> Vec<Idle> {
        st.generation += 1;
        let closed: Vec<Idle> = st.idle.drain(..).collect();
        st.total -= closed.len();
        st.closed_on_switch += closed.len() as u64;
        closed
    }

    /// Makes `addr`, whose configuration has config epoch `epoch`, the master (no-op when it already
    /// is). Returns the generation, or `None` when the address is known demoted or its configuration
    /// is older than the one the pool follows.
    pub(crate) fn install(&self, addr: &Addr, reason: SwitchReason, epoch: u64) -> Option<u64> {
        let (closed, event) = {
            let mut st = lock(&self.state);
            if st.master.as_ref() == Some(addr) {
                if st.epoch.is_none_or(|k| epoch > k) {
                    st.epoch = Some(epoch);
                }
                return Some(st.generation);
            }
            if Self::is_stale_in(&st, addr, epoch) {
                tracing::warn!(%addr, epoch, known = ?st.epoch, "ignoring a master of an older configuration");
                return None;
            }
            let demoted = st
                .demoted
                .get(addr)
                .map(|t| t.elapsed() < self.opts.demoted_hold)
                .unwrap_or(false);
            let newer = st.epoch.is_some_and(|k| epoch > k);
            if demoted
                && !newer
                && !matches!(reason, SwitchReason::SwitchMessage | SwitchReason::Promoted)
            {
                return None;
            }
            st.demoted.remove(addr);
            let prev = st.master.take();
            if let Some(p) = &prev {
                st.demoted.insert(p.clone(), Instant::now());
            }
            let old = prev.or_else(|| st.last_master.clone());
            let closed = Self::end_generation(&mut st);
            st.master = Some(addr.clone());
            st.last_master = Some(addr.clone());
            st.epoch = Some(epoch);
            st.switches += 1;
            let old = old.filter(|o| o != addr);
            let event = Event::MasterSwitched {
                old,
                new: addr.clone(),
                generation: st.generation,
                reason: reason.clone(),
                at: SystemTime::now(),
            };
            (closed, event)
        };
        if !closed.is_empty() {
            tracing::info!(
                count = closed.len(),
                "closed idle connections to the previous master"
            );
        }
        drop(closed);
        tracing::info!(?event, "master installed");
        self.emit(event);
        self.changed.notify_waiters();
        Some(self.generation())
    }

    /// Marks `addr` demoted: nothing more is sent to it, and if it is the master the pool waits for
    /// the next one.
    pub(crate) fn demote(&self, addr: &Addr, cause: &str) {
        let (closed, event) = {
            let mut st = lock(&self.state);
            st.demoted.insert(addr.clone(), Instant::now());
            if st.master.as_ref() != Some(addr) {
                return;
            }
            st.master = None;
            let closed = Self::end_generation(&mut st);
            let event = Event::MasterDemoted {
                master: addr.clone(),
                generation: st.generation,
                cause: cause.to_string(),
                at: SystemTime::now(),
            };
            (closed, event)
        };
        drop(closed);
        tracing::warn!(master = %addr, cause, "master demoted; waiting for the new one");
        self.emit(event);
        self.changed.notify_waiters();
        self.poke.notify_one();
    }

    /// A failover of `addr` was aborted: it may be master again (ROLE decides).
    pub(crate) fn undemote(&self, addr: &Addr) {
        lock(&self.state).demoted.remove(addr);
        self.changed.notify_waiters();
        self.poke.notify_one();
    }

    /// `+switch-master old -> new` or `+promoted-slave` heard from `sentinel`: the message carries no
    /// epoch, so the same sentinel is asked for its configuration (address and config epoch, one
    /// round trip) and the switch is made only if it still names `new` with a configuration newer
    /// than the one the pool follows. A late or replayed message therefore cannot bring back an older
    /// master; when the sentinel cannot be asked, the poll decides.
    pub(crate) async fn follow_switch(
        &self,
        sentinel: &Addr,
        old: &Addr,
        new: &Addr,
        reason: SwitchReason,
    ) {
        let t = self.opts.sentinel_timeout;
        let view = async {
            let mut conn =
                sentinel::connect(&self.opts.sentinel_opts(sentinel, Some(t)), t).await?;
            sentinel::master_view(&mut conn, sentinel, &self.opts.master_name, t).await
        }
        .await;
        match view {
            Ok(Some(v)) if self.opts.address_map.map(&v.addr) == *new => {
                self.switch_with(old, new, reason, v.epoch);
            }
            Ok(other) => {
                tracing::debug!(%sentinel, %new, now = ?other, "the sentinel no longer names the announced master; the poll decides");
                self.poke.notify_one();
            }
            Err(e) => {
                tracing::warn!(%sentinel, error = %e, "could not confirm a switch message; the poll decides");
                self.poke.notify_one();
            }
        }
    }

    fn switch_with(&self, old: &Addr, new: &Addr, reason: SwitchReason, epoch: u64) {
        {
            let mut st = lock(&self.state);
            if Self::is_stale_in(&st, new, epoch) {
                tracing::warn!(%new, epoch, known = ?st.epoch, "ignoring a switch to an older configuration");
                return;
            }
            st.demoted.insert(old.clone(), Instant::now());
            st.demoted.remove(new);
            if st.master.as_ref() == Some(old) {
                st.master = None;
                st.last_master = Some(old.clone());
            }
        }
        self.install(new, reason, epoch);
    }

    /// Forgets the master after it could not be reached, so the next borrow resolves again.
    fn forget_master(&self, addr: &Addr, generation: u64) {
        let closed = {
            let mut st = lock(&self.state);
            if st.master.as_ref() != Some(addr) || st.generation != generation {
                return;
            }
            st.master = None;
            Self::end_generation(&mut st)
        };
        drop(closed);
        self.changed.notify_waiters();
    }

    pub(crate) fn set_listener_up(&self, addr: &Addr, up: bool) {
        lock(&self.listeners).insert(addr.clone(), up);
    }

    fn release_slot(&self) {
        lock(&self.state).total -= 1;
        self.changed.notify_waiters();
    }

    /// Takes a connection back from a guard. It goes back to the idle list only if it is of the
    /// current generation and usable: no request of it was cancelled or failed half-way, nothing
    /// unread is buffered, and it was not left in a session state the next borrower does not expect.
    fn give_back(&self, conn: Connection, addr: Addr, generation: u64, broken: bool) {
        let broken = broken || !conn.is_usable() || conn.buffered() > 0;
        let dropped = {
            let mut st = lock(&self.state);
            if st.closed || generation != st.generation {
                st.total -= 1;
                if !st.closed {
                    st.discarded_on_return += 1;
                }
                Some(conn)
            } else if broken {
                st.total -= 1;
                st.destroyed_broken += 1;
                Some(conn)
            } else if st.idle.len() >= self.opts.max_idle {
                st.total -= 1;
                Some(conn)
            } else {
                st.idle.push_back(Idle {
                    conn,
                    addr,
                    generation,
                });
                None
            }
        };
        drop(dropped);
        self.changed.notify_waiters();
    }

    fn promote_sentinel(&self, s: &Addr) {
        let mut list = lock(&self.sentinels);
        if let Some(i) = list.iter().position(|x| x == s) {
            if i != 0 {
                let a = list.remove(i);
                list.insert(0, a);
            }
        }
    }

    /// Asks the sentinels at once, each with the short timeout, until a majority of them (or all
    /// that can) have answered, and takes the configuration with the highest config epoch (on a tie,
    /// the sentinel earliest in the list). That sentinel moves to the front. Returns the (mapped)
    /// master address, its config epoch, the sentinel, and the open sentinel connection.
    pub(crate) async fn ask_sentinels(&self) -> Result<(Addr, u64, Addr, Connection), Error> {
        let list = lock(&self.sentinels).clone();
        let t = self.opts.sentinel_timeout;
        let name = &self.opts.master_name;
        let majority = list.len() / 2 + 1;
        let mut asks: FuturesUnordered<_> = list
            .iter()
            .enumerate()
            .map(|(i, s)| async move {
                let answer = async {
                    let mut conn = sentinel::connect(&self.opts.sentinel_opts(s, Some(t)), t)
                        .await
                        .map_err(Error::Resp)?;
                    let view = sentinel::master_view(&mut conn, s, name, t).await?;
                    Ok::<_, Error>((view, conn))
                }
                .await;
                (i, answer)
            })
            .collect();
        let mut reachable = false;
        let mut last_error = None;
        let mut answered = 0;
        let mut best: Option<(usize, sentinel::MasterView, Connection)> = None;
        while let Some((i, answer)) = asks.next().await {
            let s = &list[i];
            match answer {
                Ok((Some(view), conn)) => {
                    answered += 1;
                    let better = match &best {
                        None => true,
                        Some((bi, bv, _)) => prefers((i, view.epoch), (*bi, bv.epoch)),
                    };
                    if better {
                        best = Some((i, view, conn));
                    }
                }
                Ok((None, _)) => {
                    tracing::debug!(sentinel = %s, master = %name, "sentinel does not monitor the name");
                    answered += 1;
                    reachable = true;
                }
                Err(e) => {
                    tracing::debug!(sentinel = %s, error = %e, "sentinel did not answer");
                    last_error = Some(format!("{s}: {e}"));
                }
            }
            if answered >= majority && best.is_some() {
                break;
            }
        }
        if let Some((i, view, conn)) = best {
            let s = list[i].clone();
            self.promote_sentinel(&s);
            return Ok((self.opts.address_map.map(&view.addr), view.epoch, s, conn));
        }
        let master_name = name.clone();
        if reachable {
            Err(Error::NotMonitored { master_name })
        } else {
            Err(Error::AllSentinelsDown {
                master_name,
                last_error,
            })
        }
    }

    async fn check_role(&self, addr: &Addr) -> Result<Role, ferry_resp::Error> {
        let t = self.opts.data_connect.connect_timeout + self.opts.sentinel_timeout;
        let mut conn = sentinel::connect(&self.opts.data_opts(addr), t).await?;
        sentinel::role(&mut conn, t).await
    }

    /// Finds the master: sentinels, then ROLE. A server that is not a master yet (or is known
    /// demoted) is waited for, up to `resolve_timeout`; a master installed meanwhile by a listener
    /// ends the wait.
    async fn resolve(&self) -> Result<(Addr, u64), Error> {
        let start = Instant::now();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((m, _)) = self.master() {
                return Ok((m, self.epoch().unwrap_or(0)));
            }
            let (reported, epoch, _, conn) = self.ask_sentinels().await?;
            drop(conn);
            let why_not = if self.is_stale(&reported, epoch) {
                format!(
                    "named with config epoch {epoch}, older than the configuration followed ({})",
                    self.epoch().unwrap_or(0)
                )
            } else if self.is_held(&reported, epoch) {
                "a master being failed over".to_string()
            } else {
                match self.check_role(&reported).await {
                    Ok(Role::Master) => return Ok((reported, epoch)),
                    Ok(role) => role.name().to_string(),
                    Err(source) => {
                        return Err(Error::Connect {
                            addr: reported,
                            source,
                        })
                    }
                }
            };
            let waited = start.elapsed();
            if waited >= self.opts.resolve_timeout {
                return Err(Error::NotMaster {
                    addr: reported,
                    role: why_not,
                    waited,
                });
            }
            tracing::debug!(addr = %reported, role = %why_not, "not a master yet; resolving again");
            let _ = tokio::time::timeout(self.opts.resolve_retry_delay, notified).await;
        }
    }

    /// The master and its generation, resolving when none is known.
    async fn current_master(&self) -> Result<(Addr, u64), Error> {
        loop {
            if let Some(m) = self.master() {
                return Ok(m);
            }
            let _g = self.resolve_lock.lock().await;
            if let Some(m) = self.master() {
                return Ok(m);
            }
            match self.resolve().await {
                Ok((addr, epoch)) => {
                    if let Some(generation) = self.install(&addr, SwitchReason::Resolve, epoch) {
                        return Ok((addr, generation));
                    }
                }
                Err(e) => {
                    self.emit_resolve_failed(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Opens a new connection to the current master (resolving if needed).
    async fn open_master_connection(&self) -> Result<(Connection, Addr, u64), Error> {
        loop {
            let (addr, generation) = self.current_master().await?;
            let t = self.opts.data_connect.connect_timeout + Duration::from_secs(1);
            let conn = match sentinel::connect(&self.opts.data_opts(&addr), t).await {
                Ok(c) => c,
                Err(source) => {
                    self.forget_master(&addr, generation);
                    return Err(Error::Connect { addr, source });
                }
            };
            let mut st = lock(&self.state);
            st.created += 1;
            if st.generation == generation {
                return Ok((conn, addr, generation));
            }
        }
    }

    /// The safety-net poll: asks the sentinels, switches if they name another (confirmed) master,
    /// learns sentinels, keeps `min_idle` connections ready.
    pub(crate) async fn poll_once(self: &Arc<Self>) {
        match self.ask_sentinels().await {
            Ok((reported, epoch, sentinel, mut conn)) => {
                let known = self.master().map(|(m, _)| m);
                if known.as_ref() == Some(&reported) {
                    // Learns the exact epoch after a switch announced by a message.
                    self.install(&reported, SwitchReason::Poll, epoch);
                } else if !self.is_stale(&reported, epoch) && !self.is_held(&reported, epoch) {
                    if let Ok(Role::Master) = self.check_role(&reported).await {
                        self.install(&reported, SwitchReason::Poll, epoch);
                    }
                }
                if self.opts.discover_sentinels {
                    let t = self.opts.sentinel_timeout;
                    match sentinel::sentinels(&mut conn, &self.opts.master_name, t).await {
                        Ok(found) => {
                            for s in found {
                                self.add_sentinel(self.opts.address_map.map(&s));
                            }
                        }
                        Err(e) => {
                            tracing::debug!(sentinel = %sentinel, error = %e, "SENTINEL sentinels failed")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sentinel poll failed; keeping the known master");
                self.emit_resolve_failed(&e);
            }
        }
        lock(&self.state).polls += 1;
        self.top_up_idle().await;
    }

    /// Follows a sentinel (seeds are never dropped; this only adds).
    pub(crate) fn add_sentinel(self: &Arc<Self>, s: Addr) {
        {
            let mut list = lock(&self.sentinels);
            if list.contains(&s) {
                return;
            }
            list.push(s.clone());
        }
        tracing::info!(sentinel = %s, "sentinel discovered");
        self.emit(Event::SentinelAdded {
            sentinel: s.clone(),
        });
        crate::listener::spawn(self, s);
    }

    pub(crate) fn listener_known(&self, s: &Addr) -> bool {
        lock(&self.listeners).contains_key(s)
    }

    async fn top_up_idle(self: &Arc<Self>) {
        loop {
            let (addr, generation) = {
                let mut st = lock(&self.state);
                let Some(m) = st.master.clone() else { return };
                if st.closed
                    || st.idle.len() >= self.opts.min_idle
                    || st.total >= self.opts.max_total
                {
                    return;
                }
                st.total += 1;
                (m, st.generation)
            };
            let reservation = Reservation {
                inner: Some(self.clone()),
            };
            let t = self.opts.data_connect.connect_timeout + Duration::from_secs(1);
            match sentinel::connect(&self.opts.data_opts(&addr), t).await {
                Ok(conn) => {
                    lock(&self.state).created += 1;
                    reservation.keep();
                    self.give_back(conn, addr, generation, false);
                }
                Err(_) => return,
            }
        }
    }

    fn stats(&self) -> PoolStats {
        let sentinels = lock(&self.sentinels).clone();
        let listeners_up = lock(&self.listeners).values().filter(|up| **up).count();
        let st = lock(&self.state);
        PoolStats {
            master: st.master.clone(),
            generation: st.generation,
            total: st.total,
            idle: st.idle.len(),
            active: st.total - st.idle.len(),
            created: st.created,
            closed_on_switch: st.closed_on_switch,
            discarded_on_return: st.discarded_on_return,
            destroyed_broken: st.destroyed_broken,
            switches: st.switches,
            polls: st.polls,
            sentinels,
            listeners_up,
        }
    }
}

/// A Sentinel-aware connection pool: JedisSentinelPool's behaviour, without writing to a demoted
/// master. Cheap to clone (all clones share one pool).
///
/// See the crate documentation for the life of a master generation.
#[derive(Clone)]
pub struct SentinelPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SentinelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelPool")
            .field("master_name", &self.inner.opts.master_name)
            .field("stats", &self.inner.stats())
            .finish()
    }
}

enum Step {
    Reuse(Box<Idle>),
    Open(Reservation),
    Wait,
}

impl SentinelPool {
    /// Resolves the master (errors: [`Error::AllSentinelsDown`], [`Error::NotMonitored`],
    /// [`Error::NotMaster`], [`Error::Connect`]) and starts one listener per sentinel plus the poll.
    /// Must be called inside a tokio runtime (the background tasks are spawned on it).
    pub async fn new(opts: SentinelPoolOptions) -> Result<SentinelPool, Error> {
        opts.validate()?;
        let inner = Arc::new(Inner::new(opts));
        inner.current_master().await?;
        for s in inner.opts.sentinels.clone() {
            crate::listener::spawn(&inner, s);
        }
        crate::listener::spawn_poller(&inner);
        inner.poke.notify_one();
        Ok(SentinelPool { inner })
    }

    /// Borrows a connection to the current master, waiting up to `max_wait` when the pool is
    /// exhausted (forever when `None`; not at all when `block_when_exhausted` is false).
    pub async fn get(&self) -> Result<PooledConnection, Error> {
        self.get_with(self.inner.opts.max_wait).await
    }

    /// Like [`SentinelPool::get`] with an explicit exhaustion wait instead of `max_wait`.
    pub async fn get_timeout(&self, max_wait: Duration) -> Result<PooledConnection, Error> {
        self.get_with(Some(max_wait)).await
    }

    async fn get_with(&self, max_wait: Option<Duration>) -> Result<PooledConnection, Error> {
        let inner = &self.inner;
        let start = Instant::now();
        loop {
            let notified = inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let step = {
                let mut st = lock(&inner.state);
                // No await from here to the end of the match arms' first statements: a slot or an
                // idle connection taken below is owned by a guard before the next cancellation point.
                if st.closed {
                    return Err(Error::Closed);
                }
                let generation = st.generation;
                if let Some(pos) = st.idle.iter().position(|i| i.generation == generation) {
                    // Invariant: `pos` came from `position` on the same deque under the same lock.
                    match st.idle.remove(pos) {
                        Some(i) => Step::Reuse(Box::new(i)),
                        None => Step::Wait,
                    }
                } else if st.total < inner.opts.max_total {
                    st.total += 1;
                    Step::Open(Reservation {
                        inner: Some(inner.clone()),
                    })
                } else {
                    Step::Wait
                }
            };
            match step {
                Step::Reuse(idle) => {
                    // The guard owns it from here: if this future is dropped during the PING, the
                    // cancelled call leaves the connection unusable and the guard destroys it.
                    let mut conn =
                        PooledConnection::new(idle.conn, idle.addr, idle.generation, inner.clone());
                    if inner.opts.test_on_borrow {
                        let t = inner.opts.data_connect.connect_timeout;
                        let ok = match conn.conn.as_mut() {
                            Some(c) => sentinel::call_with_deadline(c, &["PING"], t).await.is_ok(),
                            None => false,
                        };
                        if !ok {
                            conn.broken = true;
                            drop(conn);
                            continue;
                        }
                    }
                    return Ok(conn);
                }
                Step::Open(reservation) => {
                    let (conn, addr, generation) = inner.open_master_connection().await?;
                    reservation.keep();
                    return Ok(PooledConnection::new(conn, addr, generation, inner.clone()));
                }
                Step::Wait => {
                    let exhausted = |waited| Error::PoolExhausted {
                        waited,
                        max_total: inner.opts.max_total,
                    };
                    if !inner.opts.block_when_exhausted {
                        return Err(exhausted(Duration::ZERO));
                    }
                    match max_wait {
                        None => notified.await,
                        Some(limit) => {
                            let left = limit.saturating_sub(start.elapsed());
                            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err()
                            {
                                return Err(exhausted(start.elapsed()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Borrows, runs one command, returns the connection. When the command provably did not run
    /// (the master switched before it was sent, or the server answered READONLY/MASTERDOWN/LOADING)
    /// it is retried once on the new master; other errors are returned as they are (an I/O error may
    /// mean the command ran).
    pub async fn call<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Frame, Error> {
        let mut conn = self.get().await?;
        match conn.call(argv).await {
            Err(e) if e.is_safe_to_retry() => {
                drop(conn);
                let mut conn = self.get().await?;
                conn.call(argv).await
            }
            other => other,
        }
    }

    /// A connection to a replica, for reads: replicas come from `SENTINEL replicas <name>`, skip
    /// those the sentinel flags down or disconnected, are tried round robin and must answer ROLE as
    /// a replica. With `replica_fallback_to_master` the master is used when none qualifies.
    pub async fn replica(&self) -> Result<ReplicaConnection, Error> {
        let inner = &self.inner;
        let t = inner.opts.sentinel_timeout;
        let (_, _, _, mut sconn) = inner.ask_sentinels().await?;
        let mut list: Vec<Addr> = sentinel::replicas(&mut sconn, &inner.opts.master_name, t)
            .await?
            .into_iter()
            .filter(|r| r.usable())
            .map(|r| inner.opts.address_map.map(&r.addr))
            .collect();
        drop(sconn);
        list.sort();
        list.dedup();
        let n = list.len();
        if n > 0 {
            let first = inner.replica_rr.fetch_add(1, Ordering::Relaxed) % n;
            for i in 0..n {
                let addr = &list[(first + i) % n];
                let ct = inner.opts.data_connect.connect_timeout + t;
                let Ok(mut conn) = sentinel::connect(&inner.opts.data_opts(addr), ct).await else {
                    continue;
                };
                if let Ok(Role::Replica) = sentinel::role(&mut conn, ct).await {
                    return Ok(ReplicaConnection {
                        conn,
                        addr: addr.clone(),
                        is_master: false,
                    });
                }
            }
        }
        if inner.opts.replica_fallback_to_master {
            let (conn, addr, _) = inner.open_master_connection().await?;
            return Ok(ReplicaConnection {
                conn,
                addr,
                is_master: true,
            });
        }
        Err(Error::NoReplica {
            master_name: inner.opts.master_name.clone(),
            tried: n,
        })
    }

    /// Receives pool events from now on (master switched or demoted, sentinel lost or back,
    /// sentinel added, resolve failed). A slow receiver loses the oldest events (`Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// The current master, if known (none while a failover is in progress).
    pub fn master_addr(&self) -> Option<Addr> {
        self.inner.master().map(|(m, _)| m)
    }

    /// The current master generation.
    pub fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// The sentinels followed (seeds first, then discovered ones; the last one that answered first).
    pub fn sentinels(&self) -> Vec<Addr> {
        lock(&self.inner.sentinels).clone()
    }

    /// The options the pool was built with.
    pub fn options(&self) -> &SentinelPoolOptions {
        &self.inner.opts
    }

    /// Asks the background poll to check the sentinels now.
    pub fn refresh(&self) {
        self.inner.poke.notify_one();
    }

    /// Stops the listeners and the poll, closes idle connections; borrowed ones close when
    /// returned, and later borrows fail with [`Error::Closed`].
    pub fn close(&self) {
        let idle: Vec<Idle> = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            let idle: Vec<Idle> = st.idle.drain(..).collect();
            st.total -= idle.len();
            idle
        };
        drop(idle);
        let _ = self.inner.shutdown.send(true);
        self.inner.changed.notify_waiters();
    }
}

/// A borrowed master connection; goes back to the pool when dropped, but only if it is usable:
/// it is closed instead when its master generation ended, when a call on it failed or was cancelled
/// half-way (dropping a `call` future, e.g. in `tokio::time::timeout`, leaves a reply unread), when
/// unread bytes are buffered, inside an unfinished `MULTI`/`WATCH`, or after a command that changes
/// the session (`SELECT`, `SUBSCRIBE`, `CLIENT REPLY`, `READONLY`, ...). The next borrower never gets
/// a connection whose replies are out of step.
///
/// Use [`PooledConnection::call`] / [`PooledConnection::pipeline`]: they refuse to send on a
/// connection whose master was replaced ([`Error::MasterSwitched`], nothing sent) and turn a
/// `READONLY`/`MASTERDOWN` reply into a demotion of that server. `Deref` gives the raw
/// [`ferry_resp::Connection`] for anything else (without those checks).
pub struct PooledConnection {
    conn: Option<Connection>,
    addr: Addr,
    generation: u64,
    broken: bool,
    /// A `MULTI` or `WATCH` was sent and no `EXEC` / `DISCARD` / `UNWATCH` closed it yet.
    in_transaction: bool,
    inner: Arc<Inner>,
}

/// What a command does to the connection's session, as far as the pool cares.
enum SessionEffect {
    None,
    /// `MULTI` / `WATCH`: the connection must not go back to the pool until the transaction ends.
    Opens,
    /// `EXEC` / `DISCARD` / `UNWATCH`.
    Closes,
    /// A state the next borrower would not expect (`SELECT`, `SUBSCRIBE`, `CLIENT REPLY`, ...): the
    /// connection is closed instead of being returned.
    Taints,
}

fn session_effect<A: AsRef<[u8]>>(argv: &[A]) -> SessionEffect {
    let Some(name) = argv.first().map(AsRef::as_ref) else {
        return SessionEffect::None;
    };
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("MULTI") || is("WATCH") {
        SessionEffect::Opens
    } else if is("EXEC") || is("DISCARD") || is("UNWATCH") {
        SessionEffect::Closes
    } else if [
        "SELECT",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "MONITOR",
        "HELLO",
        "AUTH",
        "RESET",
        "READONLY",
        "READWRITE",
        "QUIT",
        "SYNC",
        "PSYNC",
    ]
    .iter()
    .any(|n| is(n))
    {
        SessionEffect::Taints
    } else if is("CLIENT") {
        let sub = argv.get(1).map(AsRef::as_ref).unwrap_or_default();
        if [&b"REPLY"[..], b"TRACKING", b"NO-EVICT", b"NO-TOUCH"]
            .iter()
            .any(|n| sub.eq_ignore_ascii_case(n))
        {
            SessionEffect::Taints
        } else {
            SessionEffect::None
        }
    } else {
        SessionEffect::None
    }
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("addr", &self.addr)
            .field("generation", &self.generation)
            .field("broken", &self.broken)
            .finish()
    }
}

impl PooledConnection {
    fn new(conn: Connection, addr: Addr, generation: u64, inner: Arc<Inner>) -> PooledConnection {
        PooledConnection {
            conn: Some(conn),
            addr,
            generation,
            broken: false,
            in_transaction: false,
            inner,
        }
    }

    /// Records what the commands about to be sent do to the session.
    fn note_session<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        match session_effect(argv) {
            SessionEffect::None => {}
            SessionEffect::Opens => self.in_transaction = true,
            SessionEffect::Closes => self.in_transaction = false,
            SessionEffect::Taints => self.broken = true,
        }
    }

    /// The master this connection talks to (as reached, after the address map).
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The master generation the connection was opened in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the connection still belongs to the pool's current master generation.
    pub fn is_current(&self) -> bool {
        self.inner.generation() == self.generation
    }

    fn check_current(&mut self) -> Result<&mut Connection, Error> {
        let current = self.inner.generation();
        if current != self.generation {
            self.broken = true;
            return Err(Error::MasterSwitched {
                addr: self.addr.clone(),
                generation: self.generation,
                current,
            });
        }
        self.conn.as_mut().ok_or(Error::Closed)
    }

    fn on_server_error(&mut self, code: &str) {
        match code {
            "READONLY" | "MASTERDOWN" => {
                self.broken = true;
                self.inner.demote(&self.addr, code);
            }
            "LOADING" => {
                self.broken = true;
                self.inner.forget_master(&self.addr, self.generation);
                self.inner.poke.notify_one();
            }
            _ => {}
        }
    }

    fn on_error(&mut self, e: &ferry_resp::Error) {
        match e.server_error() {
            Some(s) => {
                let code = s.code().to_string();
                self.on_server_error(&code);
            }
            None => self.broken = true,
        }
    }

    /// Sends one command and reads its reply, unless the master generation has ended (then
    /// [`Error::MasterSwitched`] and nothing is sent). An error reply is `Err`.
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        self.check_current()?;
        self.note_session(argv);
        let conn = self.check_current()?;
        let r = conn.call(argv).await;
        if let Err(e) = &r {
            self.on_error(e);
        }
        Ok(r?)
    }

    /// Sends several commands at once and reads all replies (error replies stay in place as
    /// `Frame::Error`), unless the master generation has ended.
    pub async fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Frame>, Error> {
        self.check_current()?;
        for argv in cmds {
            self.note_session(argv);
        }
        let conn = self.check_current()?;
        let r = conn.pipeline(cmds).await;
        match &r {
            Ok(frames) => {
                let code = frames.iter().find_map(|f| match f {
                    Frame::Error(b) => {
                        let s = String::from_utf8_lossy(b);
                        let code = s.split_whitespace().next().unwrap_or("").to_string();
                        matches!(code.as_str(), "READONLY" | "MASTERDOWN" | "LOADING")
                            .then_some(code)
                    }
                    _ => None,
                });
                if let Some(code) = code {
                    self.on_server_error(&code);
                }
            }
            Err(e) => self.on_error(e),
        }
        Ok(r?)
    }

    /// Drops the connection instead of returning it to the pool.
    pub fn discard(mut self) {
        self.broken = true;
    }
}

impl Deref for PooledConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Invariant: `conn` is only taken in `drop`.
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.give_back(
                conn,
                self.addr.clone(),
                self.generation,
                self.broken || self.in_transaction,
            );
        }
    }
}

/// A connection to a replica (not pooled; closed on drop), from [`SentinelPool::replica`].
/// Derefs to [`ferry_resp::Connection`].
pub struct ReplicaConnection {
    conn: Connection,
    addr: Addr,
    is_master: bool,
}

impl std::fmt::Debug for ReplicaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConnection")
            .field("addr", &self.addr)
            .field("is_master", &self.is_master)
            .finish()
    }
}

impl ReplicaConnection {
    /// The server this connection talks to.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Whether no replica qualified and this is the master (`replica_fallback_to_master`).
    pub fn is_master(&self) -> bool {
        self.is_master
    }

    /// The connection itself.
    pub fn into_inner(self) -> Connection {
        self.conn
    }
}

impl Deref for ReplicaConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for ReplicaConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The pooled connection as a [`ferry_resp::ConnectionLike`], with the checks of
/// [`PooledConnection::call`] and [`PooledConnection::pipeline`].
impl ferry_resp::ConnectionLike for PooledConnection {
    type Error = Error;

    fn call<'a, A>(
        &'a mut self,
        argv: &'a [A],
    ) -> impl std::future::Future<Output = Result<Frame, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        PooledConnection::call(self, argv)
    }

    fn pipeline<'a, A>(
        &'a mut self,
        cmds: &'a [Vec<A>],
    ) -> impl std::future::Future<Output = Result<Vec<Frame>, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        PooledConnection::pipeline(self, cmds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Inner {
        Inner::new(SentinelPoolOptions::new("m", [Addr::new("127.0.0.1", 1)]))
    }

    #[test]
    fn the_highest_config_epoch_wins_then_the_earliest_sentinel() {
        assert!(prefers((2, 7), (0, 6)));
        assert!(!prefers((0, 6), (2, 7)));
        assert!(prefers((0, 7), (1, 7)));
        assert!(!prefers((1, 7), (0, 7)));
    }

    #[test]
    fn an_address_of_an_older_configuration_is_never_installed() {
        let p = inner();
        let (a, b) = (Addr::new("h", 1), Addr::new("h", 2));
        assert!(p.install(&a, SwitchReason::Resolve, 5).is_some());
        assert!(
            p.install(&b, SwitchReason::Poll, 4).is_none(),
            "older epoch"
        );
        assert!(
            p.install(&b, SwitchReason::Poll, 5).is_none(),
            "same epoch, other address"
        );
        assert_eq!(p.master().map(|m| m.0), Some(a.clone()));
        assert!(p.install(&b, SwitchReason::Poll, 6).is_some());
        assert!(
            p.install(&a, SwitchReason::Poll, 5).is_none(),
            "the old master with its old epoch"
        );
        p.demote(&b, "READONLY");
        assert!(
            p.install(&a, SwitchReason::Resolve, 5).is_none(),
            "not even once the master is demoted"
        );
        assert!(p.install(&a, SwitchReason::Resolve, 7).is_some());
        assert_eq!(p.epoch(), Some(7));
    }

    #[test]
    fn a_switch_message_confirmed_with_an_older_epoch_is_ignored() {
        let p = inner();
        let (a, b) = (Addr::new("h", 1), Addr::new("h", 2));
        assert!(p.install(&a, SwitchReason::Resolve, 9).is_some());
        let generation = p.generation();
        // A late `+switch-master a -> b` whose sentinel reports b at epoch 8.
        p.switch_with(&a, &b, SwitchReason::SwitchMessage, 8);
        assert_eq!(p.master().map(|m| m.0), Some(a.clone()));
        assert_eq!(p.generation(), generation, "nothing changed");
        p.switch_with(&a, &b, SwitchReason::SwitchMessage, 10);
        assert_eq!(p.master().map(|m| m.0), Some(b));
        assert!(p.is_demoted(&a));
    }
}
