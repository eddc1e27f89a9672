//! The compressors and decompressors of storage archives behind one `Write`/`Read`
//! face: zstd (multithreaded, with a frame checksum), gzip (seed-compatible), none.

use std::io::{self, BufRead, Read, Write};

use crate::config::Compression;

/// A compressing writer; `finish` flushes the last frame and returns the inner writer.
pub enum Compressor<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Plain(W),
}

/// Bytes per multithreaded zstd job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

impl<W: Write> Compressor<W> {
    /// Change the level for what comes next. Multithreaded zstd applies it from its next
    /// job on (as `zstd --adapt` does); gzip and none ignore it.
    pub fn set_level(&mut self, level: i32) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => {
                e.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
            }
            _ => Ok(()),
        }
    }

    pub fn new(inner: W, compression: Compression, level: i32, threads: u32) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                enc.include_checksum(true)?;
                if threads > 1 {
                    enc.multithread(threads)?;
                    // Smaller jobs than zstd's default (4 × window) keep the buffers in
                    // flight — and so peak memory — small; the ratio barely moves.
                    enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
                Compressor::Zstd(enc)
            }
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level.clamp(0, 9) as u32),
            )),
            Compression::None => Compressor::Plain(inner),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::Gzip(e) => e.finish(),
            Compressor::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Plain(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.write_all(buf),
            Compressor::Gzip(e) => e.write_all(buf),
            Compressor::Plain(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Plain(w) => w.flush(),
        }
    }
}

/// A decompressing reader for an archive of the given compression.
pub enum Decompressor<R: BufRead> {
    Zstd(Box<zstd::stream::read::Decoder<'static, R>>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Plain(R),
}

impl<R: BufRead> Decompressor<R> {
    pub fn new(inner: R, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd => {
                Decompressor::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(inner)?))
            }
            Compression::Gzip => {
                Decompressor::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(inner)))
            }
            Compression::None => Decompressor::Plain(inner),
        })
    }
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::Zstd(d) => d.read(buf),
            Decompressor::Gzip(d) => d.read(buf),
            Decompressor::Plain(r) => r.read(buf),
        }
    }
}
