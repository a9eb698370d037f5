//! Idle upstream connections of one worker, per upstream address, reused most-recent-first, and
//! the TCP connect both upstream clients (hyper's and the lean one) open them with.

use foldhash::HashMap;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
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

/// An upstream address as the pool's key, compared and hashed as its exact text. `Authority`
/// hashes byte by byte in lower case (hosts are case-insensitive), which cost ~300 instructions
/// per checkout and per return; the routing table spells each upstream address one way, so the
/// exact text finds the same connections.
struct PoolKey(Authority);

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// Lookups by `&str` hash and compare as `PoolKey` does, as `Borrow` requires.
impl Borrow<str> for PoolKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

pub struct IdlePool<C> {
    idle: Mutex<HashMap<PoolKey, Vec<Idle<C>>>>,
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
        let idle = pool.get_mut(authority.as_str())?;
        while let Some(mut entry) = idle.pop() {
            if self.is_live(&mut entry) {
                return Some(entry.conn);
            }
        }
        None
    }

    pub fn give_back(&self, authority: Authority, conn: C) {
        let mut pool = self.idle.lock().expect("pool lock is never poisoned");
        let idle = pool.entry(PoolKey(authority)).or_default();
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
