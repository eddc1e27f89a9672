//! Deterministic benchmark corpus shaped like a Vertex AR installation (see bench/README.md).
//!
//! ```text
//! cargo run --release --example gen_corpus -- --out DIR --size 1GiB --seed 42
//!     [--files N]       N small files (1–16 KiB) instead of the media mix: the scaling test
//!     [--db-size SIZE]  grow the database to SIZE instead of size/64 (the database benchmark)
//!     [--small-change]  edit ~0.5 % and add ~0.5 % of the files of an existing corpus,
//!                       and update a few database rows (an incremental day of the app)
//! ```
//!
//! Writes `DIR/app_data/app_data.db`: SQLite in WAL mode with the app's tables (users,
//! clients, portraits, videos) and indexes, about size/64 bytes (rows for media no longer on
//! disk make up the difference), and `DIR/storage/client_N/{images,videos,previews,nft_markers}/`:
//! one portrait per ~2 MiB of `--size` (an image, a preview, three NFT markers, 1–3 videos),
//! four portraits per client. Bytes: ~70 % videos (.mp4), ~20 % images (.jpg) and ~2 %
//! previews (.webp), all random and so incompressible; ~8 % markers (.fset, .fset3, .iset),
//! text-like lines that zstd -3 shrinks ~3.7x. The same arguments give the same bytes (file
//! times aside): one splitmix64 stream drives everything, random data comes in 1 MiB blocks.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, params};
use vertex_backup::units::parse_bytes;

const MIB: u64 = 1 << 20;
/// Bytes of storage per portrait, and portraits per client.
const PORTRAIT_BYTES: u64 = 2 * MIB;
const PORTRAITS_PER_CLIENT: u64 = 4;
/// Kinds of file in one portrait: (subdirectory, name suffix, share of the portrait's bytes).
const KINDS: [(&str, &str, f64); 6] = [
    ("images", ".jpg", 0.20),
    ("previews", "_preview.webp", 0.02),
    ("nft_markers", ".fset", 0.02),
    ("nft_markers", ".fset3", 0.02),
    ("nft_markers", ".iset", 0.04),
    ("videos", ".mp4", 0.70),
];
const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, hashed_password TEXT NOT NULL, is_admin INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
    CREATE TABLE clients (id INTEGER PRIMARY KEY, phone TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE portraits (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), image_path TEXT NOT NULL, marker_fset TEXT, marker_fset3 TEXT, marker_iset TEXT, permanent_link TEXT UNIQUE NOT NULL, view_count INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
    CREATE TABLE videos (id INTEGER PRIMARY KEY, portrait_id INTEGER NOT NULL REFERENCES portraits(id), video_path TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
    CREATE INDEX idx_portraits_client ON portraits(client_id);
    CREATE INDEX idx_videos_portrait ON videos(portrait_id);";
const BCRYPT: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const NAMES: [&str; 12] = [
    "Anna", "Boris", "Daria", "Egor", "Irina", "Kirill", "Maria", "Nikita", "Olga", "Pavel",
    "Sofia", "Timur",
];

/// splitmix64: tiny, fast, and good enough that its bytes do not compress.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// A factor in [0.5, 1.5): sizes vary around their mean.
    fn jitter(&mut self) -> f64 {
        0.5 + (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }
    fn text(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

/// `len` bytes of the kind `suffix` names, for `offset` in a file: marker text for markers,
/// random bytes otherwise (after the format's magic at offset 0, for `file` and humans).
fn content(rng: &mut Rng, suffix: &str, len: usize, offset: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len + 64);
    if suffix.contains("fset") || suffix.ends_with("iset") {
        for i in offset / 37.. {
            if buf.len() >= len {
                break;
            }
            let (x, y, s) = (rng.below(1024), rng.below(768), rng.below(4000));
            let (s, f) = (s / 1000, s % 1000);
            writeln!(buf, "{i:6} {x:4} {y:4} {s}.{f:03} 0.000 0.000 1").expect("vec write");
        }
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
        rng.fill(&mut buf);
        let magic: &[u8] = match suffix {
            ".jpg" => b"\xFF\xD8\xFF\xE0\0\x10JFIF\0",
            ".mp4" => b"\0\0\0\x18ftypmp42",
            _ => b"RIFF\0\0\0\0WEBPVP8 ",
        };
        let n = if offset == 0 { magic.len().min(len) } else { 0 };
        buf[..n].copy_from_slice(&magic[..n]);
    }
    buf
}

/// Write a file of `len` bytes in blocks of at most 1 MiB.
fn write_file(rng: &mut Rng, path: &Path, suffix: &str, len: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    for offset in (0..len).step_by(MIB as usize) {
        let n = (len - offset).min(MIB);
        f.write_all(&content(rng, suffix, n as usize, offset))?;
    }
    Ok(())
}

/// A creation time: ids are created `step` seconds apart from November 2023 on.
fn stamp(id: i64, step: i64) -> String {
    let t = 1_700_000_000 + id * step;
    let dt = chrono::DateTime::from_timestamp(t, 0).expect("valid timestamp");
    dt.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Where the app keeps a portrait's file of kind `k` (KINDS), relative to the storage root.
fn media(client: i64, p: i64, k: usize, video: i64) -> String {
    let (sub, suffix, _) = KINDS[k];
    match sub {
        "videos" => format!("client_{client}/videos/video_{video}.mp4"),
        _ => format!("client_{client}/{sub}/portrait_{p}{suffix}"),
    }
}

/// The last ids used, and the writers of rows, in one transaction.
struct Db<'c> {
    tx: rusqlite::Transaction<'c>,
    ids: [i64; 3], // clients, portraits, videos
}

impl Db<'_> {
    fn open(conn: &mut Connection) -> Result<Db<'_>> {
        let mut ids = [0; 3];
        for (id, t) in ids.iter_mut().zip(["clients", "portraits", "videos"]) {
            let sql = format!("SELECT coalesce(max(id), 0) FROM {t}");
            *id = conn.query_row(&sql, [], |r| r.get(0))?;
        }
        Ok(Db {
            tx: conn.transaction()?,
            ids,
        })
    }
    fn insert(&self, sql: &str, params: impl rusqlite::Params) -> Result<()> {
        self.tx.prepare_cached(sql)?.execute(params)?;
        Ok(())
    }
    fn client(&mut self, rng: &mut Rng) -> Result<i64> {
        self.ids[0] += 1;
        let c = self.ids[0];
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let name = format!("{name} {}", rng.text(b"abcdefghijklmnopqrstuvwxyz", 7));
        let phone = format!("+7999{}", rng.text(b"0123456789", 7));
        let row = params![c, phone, name, stamp(c, 3600)];
        self.insert("INSERT INTO clients VALUES (?1, ?2, ?3, ?4)", row)?;
        Ok(c)
    }
    /// A portrait row and its video rows; returns their ids.
    fn portrait(&mut self, rng: &mut Rng, client: i64, videos: u64) -> Result<(i64, Vec<i64>)> {
        self.ids[1] += 1;
        let p = self.ids[1];
        let path = |k| format!("storage/{}", media(client, p, k, 0));
        let link = format!("p-{p}-{}", rng.text(b"0123456789abcdef", 16));
        let views = rng.below(5000) as i64;
        let [img, fset, fset3, iset] = [0, 2, 3, 4].map(path);
        let row = params![
            p,
            client,
            img,
            fset,
            fset3,
            iset,
            link,
            views,
            stamp(p, 900)
        ];
        self.insert(
            "INSERT INTO portraits VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            row,
        )?;
        let mut ids = Vec::new();
        for k in 0..videos {
            self.ids[2] += 1;
            let v = self.ids[2];
            let path = format!("storage/{}", media(client, p, 5, v));
            let row = params![v, p, path, (k == 0) as i64, stamp(v, 600)];
            self.insert("INSERT INTO videos VALUES (?1, ?2, ?3, ?4, ?5)", row)?;
            ids.push(v);
        }
        Ok((p, ids))
    }
    fn commit(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }
    fn bytes(&self) -> Result<u64> {
        let n: i64 = self.tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        Ok(n as u64 * 4096)
    }
}

/// One portrait's files; `sizes[k]` is the size of a file of KINDS[k]. Writes at most
/// `limit` files (counting it down) and returns the bytes written.
fn write_portrait(
    rng: &mut Rng,
    storage: &Path,
    ids: (i64, i64, &[i64]),
    sizes: &[u64; 6],
    limit: &mut u64,
) -> Result<u64> {
    let (client, p, videos) = ids;
    let mut written = 0;
    for (k, (_, suffix, _)) in KINDS.iter().enumerate() {
        for &v in if k == 5 { videos } else { &[0][..] } {
            if *limit == 0 {
                return Ok(written);
            }
            let path = storage.join(media(client, p, k, v));
            fs::create_dir_all(path.parent().expect("a parent"))?;
            write_file(rng, &path, suffix, sizes[k])?;
            *limit -= 1;
            written += sizes[k];
        }
    }
    Ok(written)
}

/// Sizes of a media portrait with `videos` videos: shares of ~2 MiB, each varied ±50 %.
fn media_sizes(rng: &mut Rng, videos: u64) -> [u64; 6] {
    std::array::from_fn(|k| {
        let share = KINDS[k].2 / if k == 5 { videos as f64 } else { 1.0 };
        (PORTRAIT_BYTES as f64 * share * rng.jitter()) as u64
    })
}

/// What to generate: storage bytes, small-file count (the scaling test), database bytes.
struct Shape {
    size: u64,
    files: Option<u64>,
    db_size: Option<u64>,
}

fn generate(out: &Path, shape: &Shape, rng: &mut Rng) -> Result<()> {
    let Shape { size, files, .. } = *shape;
    let (storage, app) = (out.join("storage"), out.join("app_data"));
    if storage.exists() || app.exists() {
        bail!(
            "{} holds a corpus: remove it, or pass --small-change",
            out.display()
        );
    }
    fs::create_dir_all(&storage)?;
    fs::create_dir_all(&app)?;
    let mut conn = Connection::open(app.join("app_data.db"))?;
    conn.execute_batch(SCHEMA)?;
    let mut db = Db::open(&mut conn)?;
    for (u, name) in (1i64..).zip(["admin", "operator", "manager", "support", "viewer"]) {
        let hash = format!("$2b$12${}", rng.text(BCRYPT, 53));
        let row = params![u, name, hash, (u == 1) as i64, stamp(u, 86400)];
        db.insert("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5)", row)?;
    }
    let portraits = files.map_or((size / PORTRAIT_BYTES).max(1), |n| n.div_ceil(6));
    let (mut limit, mut count, mut bytes, mut client) = (files.unwrap_or(u64::MAX), 0, 0, 0);
    for i in 0..portraits {
        if i % PORTRAITS_PER_CLIENT == 0 {
            client = db.client(rng)?;
        }
        let videos = if files.is_some() { 1 } else { rng.range(1, 3) };
        let (p, vids) = db.portrait(rng, client, videos)?;
        let sizes = match files {
            Some(_) => std::array::from_fn(|_| rng.range(1024, 16 * 1024)),
            None => media_sizes(rng, videos),
        };
        let before = limit;
        bytes += write_portrait(rng, &storage, (client, p, &vids), &sizes, &mut limit)?;
        count += before - limit;
    }
    // Rows of media deleted from disk since: the database grows to about size/64.
    let target = match (shape.db_size, files) {
        (Some(bytes), _) => bytes,
        (None, Some(_)) => 0,
        (None, None) => size / 64,
    };
    while db.bytes()? < target {
        let c = db.client(rng)?;
        for _ in 0..rng.range(1, 6) {
            let videos = rng.range(1, 3);
            db.portrait(rng, c, videos)?;
        }
    }
    let db_bytes = db.bytes()?;
    db.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    println!(
        "corpus {}: {count} files, {bytes} bytes of storage, database {db_bytes} bytes",
        out.display()
    );
    Ok(())
}

fn small_change(out: &Path, rng: &mut Rng) -> Result<()> {
    let storage = out.join("storage");
    let all: Vec<PathBuf> = walkdir::WalkDir::new(&storage)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    if all.is_empty() {
        bail!(
            "{} holds no files: generate a corpus first",
            storage.display()
        );
    }
    let target = (all.len() as u64 / 100).max(2);
    // Edit half: overwrite up to 64 KiB at a random place with new content of the same kind.
    let mut picked = HashSet::new();
    while (picked.len() as u64) < (target / 2).min(all.len() as u64) {
        picked.insert(rng.below(all.len() as u64) as usize);
    }
    let mut picked: Vec<usize> = picked.into_iter().collect();
    picked.sort();
    for &i in &picked {
        let len = fs::metadata(&all[i])?.len();
        let n = len.min(64 * 1024);
        let at = rng.below(len - n + 1);
        let ext = all[i].extension().unwrap_or_default().to_string_lossy();
        let mut f = OpenOptions::new().write(true).open(&all[i])?;
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&content(rng, &format!(".{ext}"), n as usize, at))?;
    }
    // Add the other half as new portraits of clients that have media on disk (they come
    // first), and touch a few rows.
    let with_media = fs::read_dir(&storage)?.count() as u64;
    let mut conn = Connection::open(out.join("app_data").join("app_data.db"))?;
    let mut db = Db::open(&mut conn)?;
    let (mut added, mut limit) = (0, u64::MAX);
    while added < target - target / 2 {
        let client = rng.range(1, with_media) as i64;
        let videos = rng.range(1, 3);
        let (p, vids) = db.portrait(rng, client, videos)?;
        let sizes = media_sizes(rng, videos);
        write_portrait(rng, &storage, (client, p, &vids), &sizes, &mut limit)?;
        added += 5 + videos;
    }
    for _ in 0..20 {
        let p = [rng.range(1, db.ids[1] as u64) as i64];
        db.insert(
            "UPDATE portraits SET view_count = view_count + 1 WHERE id = ?1",
            p,
        )?;
    }
    let v = [rng.range(1, db.ids[2] as u64) as i64];
    db.insert(
        "UPDATE videos SET is_active = 1 - is_active WHERE id = ?1",
        v,
    )?;
    db.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    println!(
        "small change in {}: {} files edited, {added} added, 21 rows updated",
        out.display(),
        picked.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    let usage = "usage: gen_corpus --out DIR [--size 1GiB] [--seed 42] [--files N] [--db-size SIZE] [--small-change]";
    let (mut out, mut size, mut seed, mut files, mut change) = (None, 1 << 30, 42, None, false);
    let mut db_size = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--size" => size = parse_bytes(&value()?).map_err(anyhow::Error::msg)?,
            "--seed" => seed = value()?.parse().context("--seed takes a number")?,
            "--files" => files = Some(value()?.parse().context("--files takes a number")?),
            "--db-size" => db_size = Some(parse_bytes(&value()?).map_err(anyhow::Error::msg)?),
            "--small-change" => change = true,
            _ => bail!("unknown argument `{a}`; {usage}"),
        }
    }
    let out = out.context(usage)?;
    let mut rng = Rng(seed);
    if change {
        small_change(&out, &mut rng)
    } else {
        let files = files.map(|n: u64| n.max(1));
        generate(
            &out,
            &Shape {
                size,
                files,
                db_size,
            },
            &mut rng,
        )
    }
}
