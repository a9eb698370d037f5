//! Thread-per-core serving. Each worker is an OS thread running its own single-threaded runtime
//! with its own upstream connection pool; a connection is handed to one worker when accepted and
//! never leaves it, so a request and the upstream connection serving it wake each other on the
//! same thread, with no cross-thread hand-off (the cost that kept a work-stealing runtime well
//! behind nginx on the same cores).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use super::{AuthShared, Proxy, ProxyConfig, SharedTable};
use crate::metrics::Metrics;

struct Worker {
    handle: Handle,
    proxy: Arc<Proxy>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

pub struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(
        count: usize,
        table: SharedTable,
        metrics: Arc<Metrics>,
        config: ProxyConfig,
        auth: AuthShared,
    ) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("kube-iap-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime ends whatever connections outlived the drain timeout.
                })?;
            // The proxy is created inside the worker so its upstream pool's connection tasks
            // run on that worker.
            let proxy = {
                let _entered = handle.enter();
                Proxy::new(table.clone(), metrics.clone(), config.clone(), auth.clone())
            };
            workers.push(Worker {
                handle,
                proxy,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// The worker for the next connection, round-robin.
    pub fn pick(&self) -> (&Handle, &Arc<Proxy>) {
        let worker = &self.workers[self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len()];
        (&worker.handle, &worker.proxy)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
