//! The uploader SIGKILLed at ten moments of a multipart upload (moments measured in bytes
//! a `FaultProxy` has forwarded, so no timing guesses): after every kill nothing lists as
//! a backup on the bucket unless all its data is there, and the next normal push
//! completes the backup and aborts every multipart upload the killed runs left open
//! (found through the journal in offsite.json).

use std::time::Duration;

use crate::offsite::setup::{
    assert_no_half_listed, assert_one_clean_remote_backup, configure, remote_backups, s3_table,
};
use crate::util::{FaultProxy, RUN_TIMEOUT, TestApp, poll_until, s3_server};

const MIB: u64 = 1024 * 1024;

#[test]
fn an_uploader_killed_at_ten_moments_never_leaves_a_half_backup_and_the_next_push_completes() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let app = TestApp::new();
    app.write_random_files("big", 6, 5 * MIB as usize);
    let extra = "part_size = \"5 MiB\"\nbandwidth_limit = \"20 MiB/s\"\nretries = 3";
    configure(
        &app,
        &[s3_table(&app, "remote", &proxy.endpoint(), &bucket, extra)],
    );
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);

    // Bytes of this run's traffic after which it is killed: before the first byte, in the
    // first part, at part boundaries, deep into the object, near its end.
    let moments = [
        0,
        1,
        64 * 1024,
        MIB,
        5 * MIB,
        5 * MIB + 512 * 1024,
        11 * MIB,
        17 * MIB,
        24 * MIB,
        29 * MIB,
    ];
    let mut dangling_seen = 0;
    let mut finished_early = 0;
    for at in moments {
        let start = proxy.bytes_up();
        let mut push = app.spawn(["offsite", "push"]);
        poll_until(
            Duration::from_secs(120),
            &format!("{at} bytes up or the push to end"),
            || proxy.bytes_up() >= start + at || !push.is_running(),
        );
        if push.is_running() {
            push.signal(libc::SIGKILL);
        } else {
            finished_early += 1;
        }
        let run = push.wait(RUN_TIMEOUT);
        assert!(
            run.signal() == Some(libc::SIGKILL) || run.code() == Some(0),
            "killed at {at} bytes: {}",
            run.describe()
        );
        // Behind the code's back, and as the binary lists it.
        assert_no_half_listed(&s3, &bucket);
        for b in remote_backups(&app, "remote") {
            assert!(
                b["problem"].is_null(),
                "killed at {at}: listed incomplete {b:#}"
            );
        }
        dangling_seen += s3.multipart_uploads(&bucket).len();
    }
    assert!(
        finished_early < moments.len() / 2,
        "the pushes mostly ended before the kill: the test killed nothing"
    );
    assert!(
        dangling_seen > 0,
        "no kill left a multipart upload open: the abort path was not exercised"
    );

    app.run(["offsite", "push"]).assert_code(0);
    assert_one_clean_remote_backup(
        &app,
        &s3,
        &bucket,
        "dangling multipart uploads were not aborted",
    );
}
