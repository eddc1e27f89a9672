//! 200 API requests in parallel while a backup runs: no 5xx, one job at a time, bounded
//! memory.

use super::*;

// ---------------------------------------------------------------------------------------
// 1. 200 API requests in parallel while a backup runs

/// What one request of the burst asks, and which answers are right while the storage
/// backup is running (held in its `after` hook until the burst is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ask {
    Health,
    List,
    Stats,
    Metrics,
    StorageJob,
    CreateStorageNoWait,
    CreateStorageWait,
    CreateDatabase,
    CreateFull,
    StatsWithoutToken,
    CreateWithWrongCookie,
}

impl Ask {
    /// The mix: 200 requests, k = 0..200.
    fn nth(k: usize) -> Ask {
        match k % 10 {
            0 => Ask::Health,
            1 => Ask::List,
            2 => Ask::Stats,
            3 => Ask::Metrics,
            4 => Ask::StorageJob,
            5 if k % 20 == 5 => Ask::CreateStorageNoWait,
            5 => Ask::CreateStorageWait,
            6 => Ask::CreateDatabase,
            7 => Ask::CreateFull,
            8 => Ask::StatsWithoutToken,
            _ => Ask::CreateWithWrongCookie,
        }
    }

    /// Allowed status codes. A second create of a type already queued or running is 409
    /// (tests/api.rs, README "REST API"); the first database and full creates queue up
    /// behind the running storage backup (202).
    fn allowed(self) -> &'static [u16] {
        match self {
            Ask::Health | Ask::List | Ask::Stats | Ask::Metrics | Ask::StorageJob => &[200],
            Ask::CreateStorageNoWait | Ask::CreateStorageWait => &[409],
            Ask::CreateDatabase | Ask::CreateFull => &[202, 409],
            Ask::StatsWithoutToken | Ask::CreateWithWrongCookie => &[401],
        }
    }

    fn send(self, http: &Client, base: &str, storage_job: u64) -> reqwest::Result<(u16, String)> {
        let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(TOKEN);
        let create = |kind: &str, wait: bool| {
            let q = if wait { "" } else { "?wait=false" };
            http.post(format!("{base}/backups/create{q}"))
                .bearer_auth(TOKEN)
                .json(&json!({ "type": kind }))
        };
        let req = match self {
            Ask::Health => http.get(format!("{base}/health")),
            Ask::List => get("/backups/list?backup_type=all"),
            Ask::Stats => get("/backups/stats"),
            Ask::Metrics => get("/metrics"),
            Ask::StorageJob => get(&format!("/backups/jobs/{storage_job}")),
            Ask::CreateStorageNoWait => create("storage", false),
            Ask::CreateStorageWait => create("storage", true),
            Ask::CreateDatabase => create("database", false),
            Ask::CreateFull => create("full", false),
            Ask::StatsWithoutToken => http.get(format!("{base}/backups/stats")),
            Ask::CreateWithWrongCookie => http
                .post(format!("{base}/backups/create"))
                .header("Cookie", "authToken=not-the-token-not-the-token")
                .json(&json!({"type": "database"})),
        };
        let r = req.send()?;
        let status = r.status().as_u16();
        Ok((status, r.text()?))
    }
}

/// One answer of the burst.
struct Answer {
    k: usize,
    ask: Ask,
    result: Result<(u16, String), String>,
    took: Duration,
}

#[test]
fn two_hundred_parallel_api_requests_during_a_backup_get_no_5xx_run_one_job_at_a_time_and_keep_memory_bounded()
 {
    let app = TestApp::new();
    // 12 × 8 MiB of incompressible media: a storage (and full) backup takes a few seconds
    // in a debug build, so the burst meets a backup that is really compressing.
    app.write_random_files("media", 12, 8 << 20);
    // The storage backup must still be queued or running when the last request of the
    // burst is answered, whatever the machine's speed, or "409 for the running type"
    // could not be asserted: an `after` hook holds each backup, once written, until the
    // gate file exists. The test opens the gate after the burst.
    let gate = app.root.join("gate-open");
    // Two compressor threads, whatever the core count: zstd's buffers grow with them,
    // and the memory bound must not depend on the machine.
    let text = schedule_config(
        &app,
        "threads = 2",
        &[],
        &format!(
            "[hooks]\nafter = \"while [ ! -e '{}' ]; do sleep 0.05; done\"\ntimeout = \"5m\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
            gate.display()
        ),
    );
    app.write_config_raw(&text);
    let mut d = Daemon::start(&app);
    let base = api_base(&mut d);
    let pid = d.pid();
    let (rss_before, hwm_before) = memory_kib(pid);

    // The backup the burst runs against.
    let http = http_client();
    let r = http
        .post(format!("{base}/backups/create?wait=false"))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "storage"}))
        .send()
        .expect("create storage");
    assert_eq!(r.status().as_u16(), 202, "{}", d.describe());
    let storage_job = r.json::<Value>().unwrap()["job_id"]
        .as_u64()
        .expect("job_id");
    let archive_growing = |d: &Daemon| {
        files_under(&d.app.kind_dir("storage")).iter().any(|p| {
            let name = p.to_string_lossy();
            name.contains(".tar") && fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
        })
    };
    d.poll(
        JOB_TIMEOUT,
        "the storage archive to be written (≥ 1 MiB)",
        archive_growing,
    );

    // A sampler: RSS while the burst runs, and never two archives being written at once.
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss, storage, full) = (
            stop.clone(),
            max_rss.clone(),
            app.kind_dir("storage"),
            app.kind_dir("full"),
        );
        thread::spawn(move || {
            let mut most_partials = 0;
            while !stop.load(Ordering::Relaxed) {
                max_rss.fetch_max(memory_kib(pid).0, Ordering::Relaxed);
                let partials = [&storage, &full]
                    .iter()
                    .flat_map(|dir| files_under(dir))
                    .filter(|p| {
                        let n = p.to_string_lossy();
                        n.ends_with(".partial") && n.contains(".tar")
                    })
                    .count();
                most_partials = most_partials.max(partials);
                thread::sleep(Duration::from_millis(10));
            }
            most_partials
        })
    };

    // The burst: 50 threads released together, 4 requests each, every kind mixed in.
    const THREADS: usize = 50;
    const PER_THREAD: usize = 4;
    let barrier = Arc::new(Barrier::new(THREADS));
    let burst_started = Instant::now();
    let answers: Vec<Answer> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, base) = (barrier.clone(), base.clone());
                s.spawn(move || {
                    let http = http_client();
                    barrier.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let k = t + i * THREADS;
                            let ask = Ask::nth(k);
                            let sent = Instant::now();
                            let result = ask
                                .send(&http, &base, storage_job)
                                .map_err(|e| format!("{e:?}"));
                            Answer {
                                k,
                                ask,
                                result,
                                took: sent.elapsed(),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a request thread panicked"))
            .collect()
    });
    let burst_took = burst_started.elapsed();
    let still_writing = archive_growing(&d)
        && files_under(&app.kind_dir("storage"))
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".partial"));

    // The storage backup was queued or running for the whole burst (the gate is closed).
    let job: Value = http
        .get(format!("{base}/backups/jobs/{storage_job}"))
        .bearer_auth(TOKEN)
        .send()
        .expect("job")
        .json()
        .expect("job JSON");
    assert_eq!(job["state"], "queued", "{job}\n{}", d.describe());

    // Figures, for the record.
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_ask: BTreeMap<(Ask, String), usize> = BTreeMap::new();
    for a in &answers {
        let key = match &a.result {
            Ok((s, _)) => s.to_string(),
            Err(_) => "connection error".to_string(),
        };
        *histogram.entry(key.clone()).or_default() += 1;
        *by_ask.entry((a.ask, key)).or_default() += 1;
    }
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "pressure/api: {} requests from {THREADS} threads in {burst_took:.2?} (slowest {slowest:.2?}); \
         storage archive still being written when the burst ended: {still_writing}",
        answers.len()
    );
    eprintln!("pressure/api: status histogram {histogram:?}");
    eprintln!("pressure/api: by request {by_ask:?}");

    // Every answer as the contract says: no 5xx, no connection error.
    assert_eq!(answers.len(), THREADS * PER_THREAD);
    let wrong: Vec<String> = answers
        .iter()
        .filter(|a| {
            !a.result
                .as_ref()
                .is_ok_and(|(s, _)| a.ask.allowed().contains(s))
        })
        .map(|a| format!("#{} {:?}: {:?}", a.k, a.ask, a.result))
        .collect();
    assert!(
        wrong.is_empty(),
        "unexpected answers (allowed: see Ask::allowed):\n{}\n{}",
        wrong.join("\n"),
        d.describe()
    );
    let body = |a: &Answer| -> Value {
        let (_, text) = a.result.as_ref().expect("checked above");
        serde_json::from_str(text).unwrap_or(Value::Null)
    };
    let mut accepted: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for a in &answers {
        let (status, text) = a.result.as_ref().expect("checked above");
        match (a.ask, *status) {
            (_, 409) => assert!(
                body(a)["detail"]
                    .as_str()
                    .is_some_and(|t| t.contains("already queued or running")),
                "#{} {:?}: {text}",
                a.k,
                a.ask
            ),
            (Ask::CreateDatabase | Ask::CreateFull, 202) => {
                let kind = if a.ask == Ask::CreateDatabase {
                    "database"
                } else {
                    "full"
                };
                accepted
                    .entry(kind)
                    .or_default()
                    .push(body(a)["job_id"].as_u64().expect("job_id"));
            }
            (Ask::StorageJob, _) => {
                let j = body(a);
                assert!(j["job"] == "storage" && j["state"] == "queued", "{j}");
            }
            (Ask::List, _) => assert!(body(a)["count"].is_u64(), "{text}"),
            (Ask::Stats, _) => assert!(body(a)["total_backups"].is_u64(), "{text}"),
            (Ask::Metrics, _) => assert!(text.contains("vertex_backup_build_info"), "{text}"),
            (Ask::Health, _) => assert_eq!(body(a)["status"], "ok", "{text}"),
            _ => {}
        }
    }
    // Exactly one create of each other type was queued; every other one was refused.
    assert_eq!(
        accepted.values().map(Vec::len).collect::<Vec<_>>(),
        vec![1, 1],
        "one database and one full job accepted: {accepted:?}\n{}",
        d.describe()
    );

    // Open the gate: storage, then database and full run to the end, in turn.
    fs::write(&gate, b"").expect("open the gate");
    let ids: Vec<u64> = std::iter::once(storage_job)
        .chain(accepted.values().flatten().copied())
        .collect();
    for id in &ids {
        let job = d.poll_for(JOB_TIMEOUT, &format!("job {id} to finish"), |_| {
            let j: Value = http
                .get(format!("{base}/backups/jobs/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .ok()?
                .json()
                .ok()?;
            (j["state"] != "queued").then_some(j)
        });
        assert_eq!(job["state"], "succeeded", "{job}\n{}", d.describe());
    }
    stop.store(true, Ordering::Relaxed);
    let most_partials = sampler.join().expect("sampler");
    let (rss_after, hwm_after) = memory_kib(pid);
    // The kernel folds RSS into VmHWM lazily; a sample can be a little above it.
    let peak = hwm_after.max(max_rss.load(Ordering::Relaxed));
    eprintln!(
        "pressure/api: daemon RSS before {} (VmHWM {}), highest sampled during the burst {}, \
         peak (VmHWM) {}, after the jobs {}",
        mib(rss_before),
        mib(hwm_before),
        mib(max_rss.load(Ordering::Relaxed)),
        mib(hwm_after),
        mib(rss_after)
    );

    // Never two jobs at once: the worker's log (microsecond timestamps) ...
    let runs = runs_of(&d);
    let names: Vec<&str> = runs.iter().map(|r| r.job.as_str()).collect();
    assert_eq!(names[0], "storage", "{runs:#?}");
    assert_eq!(runs.len(), 3, "three jobs ran: {runs:#?}\n{}", d.describe());
    for r in &runs {
        assert_eq!(r.why, "requested through the API", "{r:?}");
        assert_eq!(r.ok, Some(true), "{r:?}\n{}", d.describe());
        eprintln!(
            "pressure/api: {} ran {} → {}",
            r.job,
            r.started.format("%H:%M:%S%.3f"),
            r.finished.unwrap().format("%H:%M:%S%.3f")
        );
    }
    assert!(
        runs.windows(2)
            .all(|w| w[0].finished.unwrap() <= w[1].started),
        "{runs:#?}"
    );
    // ... the files (each backup's start, to the second, and duration: a backup that
    // started before the previous one's end would be an overlap) ...
    let mut top: Vec<(DateTime<FixedOffset>, u64, String)> = app
        .list()
        .iter()
        .filter(|b| b["part_of"].is_null())
        .map(|b| {
            assert_eq!(b["complete"], true, "{b}");
            (
                DateTime::parse_from_rfc3339(jstr(b, "created_at")).expect("created_at"),
                ju64(b, "duration_ms"),
                jstr(b, "name").to_string(),
            )
        })
        .collect();
    top.sort();
    assert_eq!(top.len(), 3, "{top:?}");
    for w in top.windows(2) {
        let (start, ms, name) = &w[0];
        let end = *start + chrono::Duration::milliseconds(*ms as i64);
        assert!(
            w[1].0 + chrono::Duration::seconds(1) > end,
            "{} started at {} before {name} (started {start}, {ms} ms) had finished",
            w[1].2,
            w[1].0
        );
    }
    // ... and the sampler never saw two archives being written.
    assert!(most_partials <= 1, "{most_partials} archives at once");
    assert_eq!(
        lines_with(&app.backup_log(), "Backup completed successfully").len(),
        3,
        "{}",
        d.describe()
    );
    assert_no_panic(&d);

    // Memory stays bounded.
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} ≥ {}\n{}",
        mib(peak),
        mib(PEAK_RSS_LIMIT_KIB),
        d.describe()
    );
    // And goes back once the jobs are done: an idle daemon must not keep the backups'
    // buffers (the idle daemon within 30 MiB, docs/design.md §8). Before the fix glibc's dynamic mmap
    // threshold kept ~30 MiB of freed zstd and I/O buffers in its arenas for good.
    assert!(
        rss_after < rss_before + IDLE_GROWTH_LIMIT_KIB,
        "RSS {} after the jobs vs {} before: the idle daemon keeps more than {}\n{}",
        mib(rss_after),
        mib(rss_before),
        mib(IDLE_GROWTH_LIMIT_KIB),
        d.describe()
    );
    d.stop();
}
