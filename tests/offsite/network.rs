//! The network dies during an upload, through a `FaultProxy` between the uploader and the
//! S3 server (which keeps what it holds): a connection cut mid-part is retried and the
//! upload completes; a network that stays down fails the push naming the target and
//! leaves nothing that lists as a backup; once it is back the next push completes and no
//! multipart upload is left dangling.

use std::time::Duration;

use crate::offsite::setup::{
    assert_no_half_listed, assert_one_clean_remote_backup, assert_s3_objects_match, configure,
    remote_backups, s3_table,
};
use crate::util::{Fault, FaultProxy, RUN_TIMEOUT, S3Server, TestApp, poll_until, s3_server};

const MIB: usize = 1024 * 1024;

/// An installation with ~20 MiB of incompressible media and a local storage backup of
/// it, its target `remote` reached through a proxy in front of the S3 server.
fn big_storage_backup(s3: &S3Server, bucket: &str, proxy: &FaultProxy) -> TestApp {
    let app = TestApp::new();
    app.write_random_files("big", 4, 5 * MIB);
    let extra = "part_size = \"5 MiB\"\nconcurrency = 1\nretries = 3\ntimeout = \"20s\"";
    configure(
        &app,
        &[s3_table(&app, "remote", &proxy.endpoint(), bucket, extra)],
    );
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    assert!(s3.list(bucket, "").is_empty());
    app
}

#[test]
fn a_connection_cut_mid_part_is_retried_and_the_upload_completes() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let app = big_storage_backup(&s3, &bucket, &proxy);

    // One connection at a time (concurrency 1): the count reaching the limit is the cut.
    let cut_after = 3 * MIB as u64;
    proxy.set(Fault::CutAfter(cut_after));
    let push = app.spawn(["offsite", "push"]);
    poll_until(Duration::from_secs(60), "the first cut", || {
        proxy.bytes_up() >= cut_after
    });
    proxy.set(Fault::Pass);
    let run = push.wait(RUN_TIMEOUT);
    run.assert_code(0);

    let backups = remote_backups(&app, "remote");
    assert_eq!(backups.len(), 1, "{backups:#?}");
    assert!(backups[0]["problem"].is_null(), "{:#}", backups[0]);
    assert_s3_objects_match(&s3, &bucket, &backups[0], Some(&app.backups));
    let data: u64 = backups[0]["size"].as_u64().expect("size");
    assert!(
        proxy.bytes_up() > data + cut_after / 2,
        "nothing was sent again after the cut: {} bytes up for {data} bytes of data",
        proxy.bytes_up()
    );
    assert_eq!(s3.multipart_uploads(&bucket), vec![]);
}

#[test]
fn a_network_that_stays_down_fails_the_push_naming_the_target_and_lists_nothing_half_done() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let app = big_storage_backup(&s3, &bucket, &proxy);

    // The server unreachable for the whole run.
    proxy.set(Fault::Refuse);
    let refused = app.run(["offsite", "push"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("`remote`"),
        "{}",
        refused.describe()
    );
    assert!(assert_no_half_listed(&s3, &bucket).is_empty());

    // Every connection cut mid-part, retries and all: the data object never completes,
    // so its metadata must never land.
    proxy.set(Fault::CutAfter(2 * MIB as u64));
    let cut = app.run(["offsite", "push"]);
    cut.assert_code(1);
    assert!(cut.stderr.contains("`remote`"), "{}", cut.describe());
    assert!(
        assert_no_half_listed(&s3, &bucket).is_empty(),
        "{:?}",
        s3.list(&bucket, "")
    );

    proxy.set(Fault::Pass);
    app.run(["offsite", "push"]).assert_code(0);
    assert_one_clean_remote_backup(&app, &s3, &bucket, "the cut uploads were left dangling");
}
