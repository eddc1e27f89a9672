//! `FaultProxy`: a TCP forwarder on 127.0.0.1 between the code under test and a server
//! (the S3 server of the offsite tests), which can refuse connections, cut one after a
//! number of request bytes, or drop every open connection at once. This is how a test
//! makes the network or the server die mid-upload without losing what the server holds
//! (moto keeps its data in memory: stopping it would lose it).
//!
//! Plain std threads: one accepting, two per connection (one each way).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// What the proxy does to traffic from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything both ways.
    Pass,
    /// Accept a new connection and close it at once (the server is gone); a connection
    /// already open is closed on its next request bytes.
    Refuse,
    /// Forward this many request bytes (client to server) on each connection, counted
    /// from when the fault is set or the connection opened, whichever is later; then close
    /// both sides, leaving the server with a truncated request.
    CutAfter(u64),
}

/// The forwarder; stopped (listener and every connection) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the accepting thread, the connections and the test share.
struct Shared {
    upstream: SocketAddr,
    /// The fault and how many times it was set (a connection restarts its `CutAfter`
    /// count when the generation changes).
    fault: Mutex<(Fault, u64)>,
    bytes_up: AtomicU64,
    /// Both sockets of every open connection, for `cut_all`.
    open: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (OS-chosen port) and forward to `upstream`, passing everything.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new((Fault::Pass, 0)),
            bytes_up: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(&listener, &accepting));
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` of the proxy, for an HTTP client or the config under test.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        let mut current = self.shared.fault.lock().expect("fault lock");
        *current = (fault, current.1 + 1);
    }

    /// Drop every open connection now (both sides), whatever the fault.
    pub fn cut_all(&self) {
        let open = std::mem::take(&mut *self.shared.open.lock().expect("connections lock"));
        for (_, client, server) in open {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Request bytes forwarded to the server so far, over all connections.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.fault.lock().expect("fault lock").0 == Fault::Refuse {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            // The server itself is down: the client sees its connection closed.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = connect_halves(client, server, shared);
    }
}

/// Register the connection and start its two copying threads.
fn connect_halves(
    client: TcpStream,
    server: TcpStream,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let registered = (id, client.try_clone()?, server.try_clone()?);
    shared
        .open
        .lock()
        .expect("connections lock")
        .push(registered);
    let (client_read, server_write) = (client.try_clone()?, server.try_clone()?);
    let up = Arc::clone(shared);
    thread::spawn(move || {
        if copy_up(client_read, &server_write, &up) == UpEnd::ClientDone {
            // The client has sent all it will (a half-close): the answer still flows.
            let _ = server_write.shutdown(Shutdown::Write);
        } else {
            close_connection(id, &up);
        }
    });
    let down = Arc::clone(shared);
    thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let _ = std::io::copy(&mut from, &mut to);
        close_connection(id, &down);
    });
    Ok(())
}

/// How the client-to-server copy ended.
#[derive(PartialEq, Eq)]
enum UpEnd {
    /// The client closed its sending side.
    ClientDone,
    /// A socket error, or the fault cut the connection.
    Closed,
}

/// Forward client bytes to the server, counting them and obeying the fault per chunk.
fn copy_up(mut from: TcpStream, mut to: &TcpStream, shared: &Shared) -> UpEnd {
    let mut buf = [0u8; 16 * 1024];
    let mut generation = None;
    let mut sent_this_generation = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return UpEnd::ClientDone,
            Err(_) => return UpEnd::Closed,
            Ok(n) => n,
        };
        let (fault, current) = *shared.fault.lock().expect("fault lock");
        if generation != Some(current) {
            generation = Some(current);
            sent_this_generation = 0;
        }
        let allowed = match fault {
            Fault::Pass => n,
            Fault::Refuse => 0,
            Fault::CutAfter(limit) => {
                let left = limit.saturating_sub(sent_this_generation);
                n.min(usize::try_from(left).unwrap_or(usize::MAX))
            }
        };
        if allowed > 0 {
            if to.write_all(&buf[..allowed]).is_err() {
                return UpEnd::Closed;
            }
            sent_this_generation += allowed as u64;
            shared.bytes_up.fetch_add(allowed as u64, Ordering::SeqCst);
        }
        let cut = match fault {
            Fault::Pass => false,
            Fault::Refuse => true,
            Fault::CutAfter(limit) => sent_this_generation >= limit,
        };
        if cut {
            return UpEnd::Closed;
        }
    }
}

/// Shut both sockets of connection `id` (the other thread then ends too) and forget it.
fn close_connection(id: u64, shared: &Shared) {
    let mut open = shared.open.lock().expect("connections lock");
    if let Some(at) = open.iter().position(|(i, _, _)| *i == id) {
        let (_, client, server) = open.swap_remove(at);
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
}
