//! Essential tasks, supervised: the owner (with the IPAM driver inside it), the data
//! plane, the firewall, the fast path, the peer listener and the API servers. Each runs
//! until the router stops; if one ends before (a panic, or a return), the router is
//! half-dead (the API answers 503, sleeve keys expire), so the daemon logs which task
//! ended and why (the panic message) at error level and exits non-zero, for systemd or
//! Kubernetes to restart it ([`crate::daemon::RouterError::TaskEnded`]).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use tokio::task::{AbortHandle, Id, JoinSet};

/// The essential tasks of one router.
#[derive(Default)]
pub struct Essential {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    handles: HashMap<&'static str, AbortHandle>,
}

/// How an essential task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its name.
    pub task: &'static str,
    /// Why: the panic message, or that it returned or was cancelled.
    pub why: String,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} task {}", self.task, self.why)
    }
}

impl Essential {
    /// No tasks yet.
    pub fn new() -> Essential {
        Essential::default()
    }

    /// Spawns `task` as the essential task `name` (on the current runtime).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
        self.handles.insert(name, handle);
    }

    /// Runs the essential task `name` on a thread of its own, in a single-threaded
    /// runtime, and supervises it like the others (a panic there ends the router with
    /// its message). `make` builds the task on that thread, so the I/O it registers is
    /// waited for, and handled, there: no hop between worker threads per packet. The
    /// thread ends when the task returns.
    pub fn spawn_thread<M, F>(&mut self, name: &'static str, make: M) -> io::Result<()>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("weft {name}"))
            .spawn(move || {
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|runtime| runtime.block_on(make()))
                        .map_err(|e| format!("cannot start its runtime: {e}"))
                }));
                let _ = done_tx.send(ran.unwrap_or_else(|p| Err(panic_message(p))));
            })?;
        self.spawn(name, async move {
            match done_rx.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => panic!("{why}"),
                Err(_) => panic!("its thread ended without a word"),
            }
        });
        Ok(())
    }

    /// Stops the task `name` on purpose (at shutdown); it is no longer supervised.
    pub fn abort(&mut self, name: &'static str) {
        if let Some(h) = self.handles.remove(name) {
            self.names.remove(&h.id());
            h.abort();
        }
    }

    /// Waits until the first supervised task ends, and says which and why. Never returns
    /// if there are none.
    pub async fn first_end(&mut self) -> Ended {
        loop {
            let Some(joined) = self.set.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, why) = match joined {
                Ok((id, ())) => (id, "returned early".to_string()),
                Err(e) if e.is_panic() => {
                    let id = e.id();
                    (id, format!("panicked: {}", panic_message(e.into_panic())))
                }
                Err(e) => (e.id(), "was cancelled".to_string()),
            };
            // Tasks aborted on purpose are no longer named: not a failure.
            if let Some(task) = self.names.remove(&id) {
                self.handles.remove(task);
                return Ended { task, why };
            }
        }
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(a panic without a message)".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The owner task used to be a bare `tokio::spawn`: a panic in it left the process
    /// running, half-dead. The supervisor reports which task ended, with the message.
    /// A task on a thread of its own runs in that thread's runtime (its timers work)
    /// and is supervised the same way: its panic ends it with the message.
    #[tokio::test]
    async fn a_task_on_its_own_thread_is_supervised_with_its_message() {
        let mut e = Essential::new();
        e.spawn("owner", std::future::pending());
        let main = std::thread::current().id();
        e.spawn_thread("data plane", move || async move {
            assert_ne!(std::thread::current().id(), main, "a thread of its own");
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v: u64 = std::hint::black_box(u64::MAX);
            let _ = v.checked_add(1).expect("attempt to add with overflow");
        })
        .expect("thread started");
        let ended = tokio::time::timeout(Duration::from_secs(5), e.first_end())
            .await
            .expect("the panic is seen");
        assert_eq!(ended.task, "data plane");
        assert!(
            ended.why.contains("panicked") && ended.why.contains("attempt to add with overflow"),
            "{ended}"
        );
    }

    #[tokio::test]
    async fn essential_task_that_panics_is_reported_with_its_message() {
        let mut e = Essential::new();
        e.spawn("data plane", std::future::pending());
        e.spawn("owner", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v: u64 = std::hint::black_box(u64::MAX);
            let _ = v.checked_add(1).expect("attempt to add with overflow");
        });
        let ended = tokio::time::timeout(Duration::from_secs(5), e.first_end())
            .await
            .expect("the panic is seen");
        assert_eq!(ended.task, "owner");
        assert!(
            ended.why.contains("panicked") && ended.why.contains("attempt to add with overflow"),
            "{ended}"
        );
    }

    #[tokio::test]
    async fn essential_task_that_returns_is_reported_and_aborted_ones_are_not() {
        let mut e = Essential::new();
        e.spawn("owner", std::future::pending());
        e.spawn("firewall", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        e.abort("owner");
        let ended = tokio::time::timeout(Duration::from_secs(5), e.first_end())
            .await
            .expect("the return is seen");
        assert_eq!(
            ended,
            Ended {
                task: "firewall",
                why: "returned early".into()
            }
        );
        let none = tokio::time::timeout(Duration::from_millis(50), e.first_end()).await;
        assert!(none.is_err(), "nothing left to end");
    }

    #[test]
    fn panic_messages_of_both_kinds() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7u8)), "(a panic without a message)");
    }
}
