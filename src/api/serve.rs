//! How the API holds its connections: at most `connection_bound()` at once — a quarter of
//! the daemon's open-file limit, so sockets can never take the descriptors its backups
//! need (lock file, database, archive, hooks) — each speaking HTTP/1 with a deadline on
//! every request head, and all of them closed gracefully on shutdown.
//!
//! A connection beyond the bound is not accepted: it waits in the kernel's listen backlog,
//! which costs the daemon no descriptor, and is taken when an open one closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A connection must deliver a complete request head within this time from when the
/// server starts waiting for one: after it opens (an idle or half-sent connection) and
/// after each response (the idle keep-alive timeout; hyper runs the same deadline then).
/// A connection that misses it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections held at once, however high the open-file limit (the admin panel
/// and a Prometheus scraper need a handful; the API storm test 50).
const MOST_CONNECTIONS: usize = 256;
/// The fewest, however low the limit.
const FEWEST_CONNECTIONS: usize = 4;
/// The share of the open-file limit the API may hold: 1/4. The rest is the scheduler's.
const LIMIT_SHARE: usize = 4;
/// After an accept error other than a vanished client (e.g. EMFILE from elsewhere in the
/// daemon), wait this long before accepting again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How many connections the API holds at once: a quarter of the soft `RLIMIT_NOFILE`
/// (read when the API starts, after the daemon raised it), between 4 and 256.
pub fn connection_bound() -> usize {
    (open_file_limit() / LIMIT_SHARE).clamp(FEWEST_CONNECTIONS, MOST_CONNECTIONS)
}

/// The soft open-file limit; when it cannot be read, the usual default (1024).
fn open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives for the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Serve `app` on `listener`, at most `bound` connections at once, until `shutdown`;
/// then stop accepting, let each open connection finish its request, and return when
/// all are closed.
pub async fn serve(listener: TcpListener, app: Router, bound: usize, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(bound));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        // The permit comes before the accept: beyond the bound, clients wait in the
        // backlog rather than in a descriptor of ours.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if client_went_away(&e) => continue,
                Err(e) => {
                    tracing::warn!("the REST API cannot accept a connection: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                // Timeouts and clients that hang up end here; nothing to report.
                _ = conn.as_mut() => return,
                () = shutdown.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    // Every open connection holds a permit: all of them back means all closed.
    let all = u32::try_from(bound).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Accept errors about one client that left before it was accepted.
fn client_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_most_descriptors_to_the_scheduler() {
        let bound = connection_bound();
        assert!((FEWEST_CONNECTIONS..=MOST_CONNECTIONS).contains(&bound));
        assert!(bound <= open_file_limit().max(16) / 4);
    }
}
