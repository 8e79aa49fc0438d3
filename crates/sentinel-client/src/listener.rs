//! The background tasks: one `+switch-master` listener per sentinel, and the safety-net poll.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::addr::Addr;
use crate::events::{Event, SwitchReason};
use crate::options::SentinelPoolOptions;
use crate::pool::Inner;
use crate::sentinel::{self, SentinelMessage};

/// Starts the listener for `sentinel` unless one runs already.
pub(crate) fn spawn(inner: &Arc<Inner>, sentinel: Addr) {
    if inner.listener_known(&sentinel) {
        return;
    }
    inner.set_listener_up(&sentinel, false);
    let weak = Arc::downgrade(inner);
    let opts = inner.opts.clone();
    let shutdown = inner.shutdown_receiver();
    tokio::spawn(listen(weak, opts, sentinel, shutdown));
}

/// Starts the poll task.
pub(crate) fn spawn_poller(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let poke = inner.poke.clone();
    let interval = inner.opts.poll_interval;
    let mut shutdown = inner.shutdown_receiver();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = poke.notified() => {}
                _ = shutdown.changed() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            inner.poll_once().await;
        }
    });
}

/// The delay before reconnect attempt `attempt` (0-based): base doubled per attempt, capped, ±20%.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.min(16);
    let d = base.saturating_mul(factor).min(max.max(base));
    let jitter: f64 = rand::thread_rng().gen_range(0.8..1.2);
    d.mul_f64(jitter)
}

/// Where a listener stands, kept across reconnects.
#[derive(Default)]
struct ListenerState {
    attempt: u32,
    lost_reported: bool,
}

/// A listener's life: subscribe, follow, and on any failure log, report, back off and retry; it
/// ends only when the pool is gone or closed.
async fn listen(
    weak: Weak<Inner>,
    opts: Arc<SentinelPoolOptions>,
    addr: Addr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = ListenerState::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            r = follow(&weak, &opts, &addr, &mut state) => r,
            _ = shutdown.changed() => return,
        };
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        let delay = backoff(
            opts.listener_retry_base,
            opts.listener_retry_max,
            state.attempt,
        );
        state.attempt = state.attempt.saturating_add(1);
        tracing::warn!(
            sentinel = %addr,
            error = %err,
            "Lost connection to Sentinel at {}:{}. Sleeping {}ms and retrying.",
            addr.host,
            addr.port,
            delay.as_millis()
        );
        {
            let Some(inner) = weak.upgrade() else { return };
            inner.set_listener_up(&addr, false);
            if !state.lost_reported {
                state.lost_reported = true;
                inner.emit(Event::SentinelLost {
                    sentinel: addr.clone(),
                    retry_in: delay,
                    error: err.to_string(),
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection's worth of listening. `Ok(())` means the pool is gone; `Err` means the sentinel
/// was lost.
async fn follow(
    weak: &Weak<Inner>,
    opts: &SentinelPoolOptions,
    addr: &Addr,
    state: &mut ListenerState,
) -> Result<(), ferry_resp::Error> {
    let conn_opts = opts.sentinel_opts(addr, None);
    let mut conn = sentinel::connect(&conn_opts, opts.sentinel_timeout).await?;
    let mut argv: Vec<&str> = vec!["PSUBSCRIBE"];
    argv.extend_from_slice(sentinel::PATTERNS);
    conn.write_command(&argv);
    conn.flush().await?;
    let mut subscribed = false;
    let mut ping_pending = false;
    loop {
        let frame = match tokio::time::timeout(opts.listener_ping_interval, conn.read_frame()).await
        {
            Ok(f) => f?,
            Err(_) => {
                if ping_pending {
                    return Err(ferry_resp::Error::Timeout("read"));
                }
                conn.write_command(&["PING"]);
                conn.flush().await?;
                ping_pending = true;
                continue;
            }
        };
        ping_pending = false;
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        if !subscribed {
            subscribed = true;
            state.attempt = 0;
            inner.set_listener_up(addr, true);
            if state.lost_reported {
                state.lost_reported = false;
                tracing::info!(sentinel = %addr, "sentinel listener subscribed again");
                inner.emit(Event::SentinelBack {
                    sentinel: addr.clone(),
                });
            }
            // Whatever happened while we were not listening: let the poll catch up.
            inner.poke.notify_one();
        }
        let Some((channel, payload)) = sentinel::pubsub_message(frame) else {
            continue;
        };
        tracing::debug!(sentinel = %addr, %channel, %payload, "sentinel message");
        let Some(msg) = sentinel::parse_message(&channel, &payload) else {
            continue;
        };
        let map = |a: &Addr| opts.address_map.map(a);
        match msg {
            SentinelMessage::Switch { name, old, new } if name == opts.master_name => {
                inner
                    .follow_switch(addr, &map(&old), &map(&new), SwitchReason::SwitchMessage)
                    .await;
            }
            SentinelMessage::Promoted { name, old, new } if name == opts.master_name => {
                inner
                    .follow_switch(addr, &map(&old), &map(&new), SwitchReason::Promoted)
                    .await;
            }
            SentinelMessage::FailoverStarted {
                name,
                master,
                channel,
            } if name == opts.master_name => {
                inner.demote(&map(&master), &channel);
            }
            SentinelMessage::FailoverAborted { name, master } if name == opts.master_name => {
                inner.undemote(&map(&master));
            }
            SentinelMessage::NewSentinel { name, sentinel }
                if name == opts.master_name && opts.discover_sentinels =>
            {
                inner.add_sentinel(map(&sentinel));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(5000);
        let max = Duration::from_secs(60);
        for _ in 0..50 {
            let d0 = backoff(base, max, 0);
            assert!(
                d0 >= Duration::from_millis(4000) && d0 <= Duration::from_millis(6000),
                "{d0:?}"
            );
            let d1 = backoff(base, max, 1);
            assert!(
                d1 >= Duration::from_millis(8000) && d1 <= Duration::from_millis(12000),
                "{d1:?}"
            );
            let d9 = backoff(base, max, 40);
            assert!(
                d9 >= Duration::from_secs(48) && d9 <= Duration::from_secs(72),
                "{d9:?}"
            );
        }
    }
}
