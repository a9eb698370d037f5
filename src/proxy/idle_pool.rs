//! Idle upstream connections of one worker, per upstream address, reused most-recent-first, and
//! the TCP connect both upstream clients (hyper's and the lean one) open them with.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::net::TcpStream;

use super::upstream::UpstreamError;

/// The longest pause between two sweeps of idle connections.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Idle connections kept per upstream address; more are closed when returned.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// A pooled connection: whether it can still carry a request (the upstream may have closed it).
pub trait Reusable: Send + 'static {
    fn is_usable(&mut self) -> bool;
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

pub struct IdlePool<C> {
    idle: Mutex<HashMap<Authority, Vec<Idle<C>>>>,
    idle_timeout: Duration,
}

impl<C: Reusable> IdlePool<C> {
    /// Must be called inside the worker's runtime: the pool's sweeper runs there.
    pub fn new(idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(IdlePool {
            idle: Mutex::default(),
            idle_timeout,
        });
        // Without traffic nothing checks connections out, so expired and closed ones (a backend
        // Pod that went away) would hold their sockets forever; the sweeper closes them.
        let weak = Arc::downgrade(&pool);
        let period = idle_timeout.min(MAX_SWEEP_PERIOD);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match weak.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
        pool
    }

    /// Drops idle connections that expired or that the upstream closed.
    fn sweep(&self) {
        let mut pool = self.idle.lock().expect("pool lock is never poisoned");
        pool.retain(|_, idle| {
            idle.retain_mut(|entry| self.is_live(entry));
            !idle.is_empty()
        });
    }

    fn is_live(&self, entry: &mut Idle<C>) -> bool {
        entry.since.elapsed() <= self.idle_timeout && entry.conn.is_usable()
    }

    /// The most recently returned live connection to `authority`; dead ones met on the way are
    /// closed (dropped).
    pub fn checkout(&self, authority: &Authority) -> Option<C> {
        let mut pool = self.idle.lock().expect("pool lock is never poisoned");
        let idle = pool.get_mut(authority)?;
        while let Some(mut entry) = idle.pop() {
            if self.is_live(&mut entry) {
                return Some(entry.conn);
            }
        }
        None
    }

    pub fn give_back(&self, authority: Authority, conn: C) {
        let mut pool = self.idle.lock().expect("pool lock is never poisoned");
        let idle = pool.entry(authority).or_default();
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Opens a TCP connection to `authority` within `timeout`, with Nagle off (requests are small and
/// written whole).
pub async fn connect(authority: &Authority, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let connecting = TcpStream::connect(authority.as_str());
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout(authority.clone())),
        Ok(Err(error)) => return Err(UpstreamError::Connect(authority.clone(), error)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
