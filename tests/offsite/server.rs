//! The S3 test infrastructure does what the offsite tests rely on: the shared server
//! stores, lists, reads back and deletes objects and lists a planted multipart upload;
//! the fault proxy passes, refuses and cuts; a private server stops and restarts.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{
    Fault, FaultProxy, PrivateS3, S3Server, connection_refused, poll_until, random_bytes, s3_server,
};

#[test]
fn the_shared_server_stores_lists_reads_back_and_deletes_objects() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    assert_ne!(bucket, s3.new_bucket(), "two buckets got one name");
    assert!(
        bucket.len() <= 63 && bucket == bucket.to_lowercase(),
        "{bucket}"
    );
    // A key S3 clients must encode (space, `+`, `&`) next to plain ones.
    let odd_key = "full/a b+c&d.json";
    s3.put(&bucket, "full/one.tar.zst", b"first");
    s3.put(&bucket, odd_key, b"odd");
    s3.put(&bucket, "database/two.db.zst", b"second!");

    assert_eq!(
        s3.list(&bucket, "full/"),
        vec![
            (odd_key.to_string(), 3),
            ("full/one.tar.zst".to_string(), 5)
        ]
    );
    assert_eq!(s3.list(&bucket, "").len(), 3);
    assert_eq!(s3.get(&bucket, odd_key).as_deref(), Some(&b"odd"[..]));
    assert_eq!(s3.get(&bucket, "full/missing"), None);
    let head = s3
        .head(&bucket, "database/two.db.zst")
        .expect("HEAD of a stored object");
    assert_eq!(
        head.get("content-length").map(String::as_str),
        Some("7"),
        "{head:?}"
    );
    assert_eq!(s3.head(&bucket, "full/missing"), None);

    // Replaced behind the code's back, as the corruption tests do.
    s3.put(&bucket, "full/one.tar.zst", b"tampered");
    assert_eq!(
        s3.get(&bucket, "full/one.tar.zst").as_deref(),
        Some(&b"tampered"[..])
    );
    s3.delete(&bucket, odd_key);
    assert_eq!(s3.get(&bucket, odd_key), None);
    assert_eq!(
        s3.list(&bucket, "full/"),
        vec![("full/one.tar.zst".to_string(), 8)]
    );

    assert_eq!(s3.multipart_uploads(&bucket), vec![]);
    let upload = s3.start_multipart(&bucket, "full/big.tar.zst");
    assert_eq!(
        s3.multipart_uploads(&bucket),
        vec![("full/big.tar.zst".to_string(), upload)]
    );
}

#[test]
fn the_fault_proxy_passes_requests_through_and_counts_their_bytes() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let through = S3Server::at(&proxy.endpoint());
    through.put(&bucket, "k", b"through the proxy");
    assert_eq!(
        s3.get(&bucket, "k").as_deref(),
        Some(&b"through the proxy"[..])
    );
    assert_eq!(
        through.get(&bucket, "k").as_deref(),
        Some(&b"through the proxy"[..])
    );
    assert!(
        proxy.bytes_up() > b"through the proxy".len() as u64,
        "{}",
        proxy.bytes_up()
    );
}

#[test]
fn the_fault_proxy_refuses_connections_under_refuse_and_passes_again_after() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    s3.put(&bucket, "k", b"v");
    let proxy = FaultProxy::start(s3.socket_addr());
    let through = S3Server::at(&proxy.endpoint());
    proxy.set(Fault::Refuse);
    let refused = through.try_get(&bucket, "k");
    assert!(
        refused.is_err(),
        "a GET through a refusing proxy answered: {refused:?}"
    );
    assert_eq!(proxy.bytes_up(), 0);
    proxy.set(Fault::Pass);
    assert_eq!(through.get(&bucket, "k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn the_fault_proxy_cuts_a_large_put_and_the_object_does_not_appear() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let through = S3Server::at(&proxy.endpoint());
    let cut_after = 64 * 1024;
    proxy.set(Fault::CutAfter(cut_after));
    let body = random_bytes(14, 4 * 1024 * 1024);
    let cut = through.try_put(&bucket, "big", body.clone());
    assert!(cut.is_err(), "a PUT cut after {cut_after} bytes succeeded");
    assert_eq!(
        proxy.bytes_up(),
        cut_after,
        "the proxy forwarded more than allowed"
    );
    assert_eq!(
        s3.head(&bucket, "big"),
        None,
        "a truncated PUT left an object"
    );
    assert_eq!(s3.list(&bucket, ""), vec![]);

    // The same upload with the network back stores the whole object.
    proxy.set(Fault::Pass);
    through.put(&bucket, "big", &body);
    assert_eq!(s3.get(&bucket, "big"), Some(body));
}

#[test]
fn the_fault_proxy_drops_every_open_connection_on_cut_all() {
    let Some(s3) = s3_server() else { return };
    let proxy = FaultProxy::start(s3.socket_addr());
    let mut open = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    // The connection is registered before the proxy reads from it: one byte crossing
    // proves it is open and forwarded.
    open.write_all(b"G").expect("write to the proxy");
    poll_until(Duration::from_secs(10), "a byte to cross", || {
        proxy.bytes_up() == 1
    });
    // Without the cut moto would wait for the rest of the request: the read would time
    // out, which fails the test as an answer would.
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    proxy.cut_all();
    let mut rest = Vec::new();
    let read = open.read_to_end(&mut rest);
    let closed = match &read {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    assert!(closed, "a cut connection stayed open: {read:?} {rest:?}");
}

#[test]
fn a_private_server_refuses_connections_when_stopped_and_answers_after_a_restart() {
    let Some(mut server) = PrivateS3::start() else {
        return;
    };
    let bucket = server.s3().new_bucket();
    server.s3().put(&bucket, "k", b"v");
    assert_eq!(server.s3().get(&bucket, "k").as_deref(), Some(&b"v"[..]));
    let addr = server.addr();

    server.stop();
    assert!(
        connection_refused(addr),
        "a stopped server's port accepted a connection"
    );
    assert!(server.s3().answers().is_err());

    server.restart();
    assert_eq!(server.addr(), addr, "the restart moved to another port");
    server.s3().answers().expect("the restarted server answers");
    // moto keeps its data in memory: the restart is empty, as PrivateS3 documents.
    let again = server.s3().new_bucket();
    assert_eq!(server.s3().list(&again, ""), vec![]);
}
