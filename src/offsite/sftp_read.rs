//! An object on an SFTP server read ahead: up to [`AHEAD`] read requests in flight at
//! successive offsets, so a restore over a link with latency moves a window of data per
//! round trip instead of one reply per round trip (OpenSSH's own client keeps 64 in
//! flight). Replies are taken in the order they were asked for. A reply shorter than
//! asked (a server may return less before the end) restarts the window right after what
//! came, so no byte is skipped; the end of the object is the server's EOF.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::file::File;
use tokio::io::AsyncSeekExt;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::sftp_session::{connection_lost, describe};

/// Read requests in flight.
const AHEAD: usize = 16;
/// What a request asks for at first: OpenSSH's largest reply (256 KiB less 1 KiB). A
/// server that answers less sets the size from then on (not below [`MIN_BLOCK`]).
const FIRST_BLOCK: u32 = 255 << 10;
const MIN_BLOCK: u32 = 16 << 10;

type Reply = Result<Option<BytesMut>, SftpError>;

pub struct ReadAhead<'a> {
    runtime: Handle,
    file: File,
    /// Bytes per request: the most the server answers at once, as learnt.
    block: u32,
    timeout: Duration,
    /// For messages.
    path: String,
    /// Called when the connection is found gone (the target then opens a new one).
    on_lost: Box<dyn Fn() + Send + Sync + 'a>,
    /// Offset of the next request to send.
    next: u64,
    /// Requests in flight, oldest first: offset, length asked, the reply to come.
    in_flight: VecDeque<(u64, u32, JoinHandle<Reply>)>,
    /// Data received and not yet handed out.
    ready: BytesMut,
    done: bool,
}

impl<'a> ReadAhead<'a> {
    pub fn new(
        runtime: Handle,
        file: File,
        timeout: Duration,
        path: String,
        on_lost: Box<dyn Fn() + Send + Sync + 'a>,
    ) -> Self {
        ReadAhead {
            runtime,
            file,
            block: FIRST_BLOCK,
            timeout,
            path,
            on_lost,
            next: 0,
            in_flight: VecDeque::new(),
            ready: BytesMut::new(),
            done: false,
        }
    }

    /// Keep [`AHEAD`] requests in flight.
    fn fill_window(&mut self) {
        while self.in_flight.len() < AHEAD {
            let (offset, n) = (self.next, self.block);
            let mut file = self.file.clone();
            let reply = self.runtime.spawn(async move {
                file.seek(io::SeekFrom::Start(offset)).await?;
                file.read(n, BytesMut::with_capacity(n as usize)).await
            });
            self.in_flight.push_back((offset, n, reply));
            self.next += u64::from(n);
        }
    }

    /// Forget what is in flight (its replies are dropped as they come) and ask again
    /// from `offset`.
    fn restart_at(&mut self, offset: u64) {
        self.in_flight.clear();
        self.next = offset;
    }

    /// The oldest request's reply, within the timeout.
    fn take_reply(&mut self) -> io::Result<(u64, u32, Option<BytesMut>)> {
        let Some((offset, asked, reply)) = self.in_flight.pop_front() else {
            return Err(io::Error::other("no read request in flight"));
        };
        let timeout = self.timeout;
        let waited = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, reply).await });
        let lost = |this: &Self, kind: io::ErrorKind, why: String| {
            (this.on_lost)();
            io::Error::new(kind, format!("read {}: {why}", this.path))
        };
        match waited {
            Ok(Ok(Ok(data))) => Ok((offset, asked, data)),
            Ok(Ok(Err(e))) => {
                let why = describe(&e);
                if connection_lost(&e) {
                    Err(lost(self, io::ErrorKind::ConnectionAborted, why))
                } else {
                    Err(io::Error::other(format!("read {}: {why}", self.path)))
                }
            }
            Ok(Err(join)) => Err(lost(self, io::ErrorKind::Other, join.to_string())),
            Err(_) => Err(lost(
                self,
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", timeout.as_secs()),
            )),
        }
    }
}

impl Read for ReadAhead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.ready.is_empty() {
                let n = buf.len().min(self.ready.len());
                buf[..n].copy_from_slice(&self.ready[..n]);
                self.ready.advance(n);
                return Ok(n);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            self.fill_window();
            let (offset, asked, data) = self.take_reply()?;
            match data {
                None => {
                    self.done = true;
                    self.in_flight.clear();
                }
                Some(data) if data.is_empty() => {
                    // Not EOF and no byte: asking again would loop for ever.
                    return Err(io::Error::other(format!(
                        "read {}: the server answered no data at offset {offset}",
                        self.path
                    )));
                }
                Some(data) => {
                    let got = data.len() as u64;
                    if got < u64::from(asked) {
                        // The server's limit (or the end): ask for that much from now on.
                        self.block = (data.len() as u32).max(MIN_BLOCK);
                        self.restart_at(offset + got);
                    }
                    self.ready = data;
                }
            }
        }
    }
}
