//! Downloading an export file safely: only https URLs (plain http only to the configured
//! simulator's loopback host), bounded redirects each checked again, a size and a time limit,
//! bounded memory (chunks stream through a small channel into a writer thread that appends to
//! the partial file), and resumption with HTTP Range from the partial file's synced offset. A server that ignores the Range (200 instead of 206, or a 206 starting elsewhere)
//! makes the download start over from zero instead of appending the wrong bytes.
//!
//! The partial file is flushed to the operating system (and its writeback started) before its
//! offset is reported to [`ProgressSink::synced`], so an offset stored in a checkpoint covers
//! bytes a killed process cannot lose. It is not fsynced at every report: that would make the
//! download as slow as the disk's synchronous writes. After an operating-system crash the file
//! may be shorter than the stored offset (the download resumes from the file's length) or
//! damaged (the gzip check at the end discards it and the file is downloaded again). The
//! complete file is fsynced before it is renamed into place.
//!
//! The complete file is then read back by [`check`]: its sha256 and a full gzip decode, in
//! parallel. Hashing the file as read back rather than the bytes as received keeps the download
//! itself to receiving and writing (on a small machine the hash would otherwise compete with
//! both for the CPU), needs no hash state saved across resumed attempts, and describes the bytes
//! actually on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Mode of export files, partial files and manifests: data, readable by the daemon's group.
pub const DATA_FILE_MODE: u32 = 0o640;

/// Network chunks are gathered into blocks of this size before they go to the writer thread,
/// so the channel and the thread wake once per block rather than once per small chunk. Small
/// enough to stay in the CPU's cache between the copy that fills it and the write that empties
/// it: on the reference machine 64 KiB blocks downloaded faster than 256 KiB or 1 MiB ones
/// (docs/benchmarks.md).
const BLOCK: usize = 64 << 10;
/// Blocks in flight between the network and the writer thread: with [`BLOCK`] the memory bound
/// of a download (4 MiB).
const CHANNEL_CHUNKS: usize = 64;
/// Bytes written between two starts of writeback (`sync_file_range`).
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Errors of a download.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The URL (or a redirect target) is not allowed.
    #[error(
        "refused to download from {url}: {reason}; export files are only fetched over https (plain http only from the configured simulator's loopback host)"
    )]
    UrlRefused {
        /// The URL, without its query (presigned signatures stay out of logs).
        url: String,
        /// Why.
        reason: String,
    },
    /// The download URL redirected more often than `max_redirects` allows.
    #[error(
        "the download URL redirected more than {max} times (the last target was {url}); raise max_redirects if the export host is expected to redirect that often"
    )]
    TooManyRedirects {
        /// The last redirect target, without its query.
        url: String,
        /// The limit.
        max: usize,
    },
    /// The download host refused the URL (expired or invalid presigned URL, missing file):
    /// fetch a fresh URL from Asana and try again.
    #[error("the download URL was refused with HTTP {status}: {detail}; a fresh URL is needed")]
    UrlRejected {
        /// HTTP status.
        status: u16,
        /// The S3 error code or the start of the body.
        detail: String,
    },
    /// A transport error or a 5xx: worth retrying from the synced offset.
    #[error("the download failed: {0}; it resumes from the bytes already on disk")]
    Transient(String),
    /// The file is larger than `max_size_mb` allows.
    #[error(
        "the export file is {size} bytes, more than the limit of {limit} bytes; raise max_size_mb if this export is expected to be that large"
    )]
    TooLarge {
        /// Size announced or reached.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The download took longer than `download_timeout`.
    #[error(
        "the download took longer than {0:?}; raise download_timeout (the next attempt resumes from the bytes on disk)"
    )]
    TimedOut(Duration),
    /// The server's answer makes no sense (a 206 with a bad Content-Range, fewer bytes than
    /// announced).
    #[error("the download server answered inconsistently: {0}")]
    Protocol(String),
    /// The local partial or destination file could not be written.
    #[error("{action} {path}: {source}; check the output directory's space and permissions")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid gzip stream (truncated or corrupted).
    #[error(
        "the downloaded file {path} is not valid gzip ({message}); it was discarded and will be downloaded again"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// The job was told to stop; the synced bytes stay for the next attempt.
    #[error("the download was interrupted; it resumes from the bytes on disk")]
    Cancelled,
    /// Reporting progress failed (the checkpoint could not be written).
    #[error("recording download progress failed: {0}")]
    Progress(String),
}

impl DownloadError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        DownloadError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

/// What downloads are allowed to do.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    /// Hosts that may be fetched over plain http: only the simulator's loopback host, taken
    /// from an http Asana base URL (which the client accepts for loopback addresses only).
    pub http_hosts: Vec<String>,
    /// Redirects followed at most (each target checked like the first URL).
    pub max_redirects: usize,
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
    /// Longest one download attempt may take.
    pub timeout: Duration,
    /// Bytes per second at most (None: as fast as the network goes).
    pub rate_limit: Option<u64>,
    /// How often the partial file is fsynced and its offset reported.
    pub sync_every: Duration,
}

impl DownloadPolicy {
    /// A policy allowing plain http only to the host of `base_url` when that is itself a plain
    /// http (loopback) URL: the simulator.
    pub fn for_base_url(base_url: &str) -> Self {
        let http_hosts = Url::parse(base_url)
            .ok()
            .filter(|url| url.scheme() == "http")
            .and_then(|url| url.host_str().map(str::to_string))
            .into_iter()
            .collect();
        Self {
            http_hosts,
            max_redirects: 5,
            max_bytes: 100 << 30,
            timeout: Duration::from_secs(4 * 3600),
            rate_limit: None,
            sync_every: Duration::from_secs(2),
        }
    }

    /// Checks a URL against the policy.
    pub fn check(&self, raw: &str) -> Result<Url, DownloadError> {
        let refuse = |reason: &str| DownloadError::UrlRefused {
            url: redact(raw),
            reason: reason.to_string(),
        };
        let url = Url::parse(raw).map_err(|e| refuse(&format!("not a valid URL ({e})")))?;
        allowed(self, &url).map_err(|reason| refuse(&reason))?;
        Ok(url)
    }
}

fn allowed(policy: &DownloadPolicy, url: &Url) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL carries credentials".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if policy.http_hosts.iter().any(|h| h == host) => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("plain http is only allowed to a loopback host".into())
            }
        }
        "http" => Err(format!("plain http to {host} is not allowed")),
        other => Err(format!("scheme {other:?} is not allowed")),
    }
}

/// The URL without query and fragment: presigned signatures are secrets of a sort.
pub fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// Receives the synced offset of the partial file while a download runs.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    /// `offset` bytes are durably in the partial file; `total` is the file's size when known.
    async fn synced(&self, offset: u64, total: Option<u64>) -> Result<(), String>;
}

/// A finished download.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// Size of the file.
    pub bytes: u64,
    /// The offset the download resumed from (0 when it started from the beginning).
    pub resumed_from: u64,
    /// Where the writer thread spent its time (for the benchmark and the log).
    pub timings: WriterTimings,
}

/// Time the writer thread spent on each of its tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriterTimings {
    /// Appending to the partial file (into the page cache).
    pub write: Duration,
    /// The final fsync.
    pub fsync: Duration,
    /// Waiting for data from the network.
    pub idle: Duration,
}

/// Downloads with one HTTP client (connection reuse) under one policy.
#[derive(Debug, Clone)]
pub struct Downloader {
    http: reqwest::Client,
    policy: DownloadPolicy,
}

impl Downloader {
    /// A downloader; the client checks every redirect target against the policy.
    pub fn new(policy: DownloadPolicy) -> Result<Self, DownloadError> {
        let redirect_policy = policy.clone();
        let http = reqwest::Client::builder()
            .user_agent(crate::asana::USER_AGENT)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > redirect_policy.max_redirects {
                    let max = redirect_policy.max_redirects;
                    return attempt.error(RedirectLimit(max));
                }
                match allowed(&redirect_policy, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(reason) => {
                        let url = redact(attempt.url().as_str());
                        attempt.error(format!("redirect to {url} refused: {reason}"))
                    }
                }
            }))
            .build()
            .map_err(|e| DownloadError::Transient(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> &DownloadPolicy {
        &self.policy
    }

    /// Downloads `url` into `partial`, resuming from `offset` bytes already synced there (the
    /// file is cut back to `offset` first: bytes beyond it were never confirmed). Returns when
    /// the whole file is in `partial` and synced; the caller checks it with [`check`] and renames
    /// it.
    pub async fn fetch(
        &self,
        url: &str,
        partial: &Path,
        offset: u64,
        progress: &dyn ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<Fetched, DownloadError> {
        let url = self.policy.check(url)?;
        let timeout = self.policy.timeout;
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(DownloadError::Cancelled),
            result = tokio::time::timeout(timeout, self.fetch_inner(url, partial, offset, progress)) => {
                result.map_err(|_| DownloadError::TimedOut(timeout))?
            }
        }
    }

    async fn fetch_inner(
        &self,
        url: Url,
        partial: &Path,
        offset: u64,
        progress: &dyn ProgressSink,
    ) -> Result<Fetched, DownloadError> {
        let existing = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let mut offset = offset.min(existing);
        let mut request = self.http.get(url.clone());
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let total;
        match status.as_u16() {
            206 if offset > 0 => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, size)) if start == offset => total = size,
                    Some((start, _)) => {
                        tracing::warn!(
                            asked = offset,
                            got = start,
                            "The download server answered a Range request from another offset; starting over"
                        );
                        return Err(DownloadError::Protocol(format!(
                            "asked for bytes from {offset}, got a range starting at {start}"
                        )));
                    }
                    None => {
                        return Err(DownloadError::Protocol(
                            "a 206 answer without a usable Content-Range".into(),
                        ));
                    }
                }
            }
            200 => {
                if offset > 0 {
                    tracing::info!(
                        offset,
                        "The download server ignored the Range request; starting over from zero"
                    );
                    offset = 0;
                }
                total = response.content_length();
            }
            416 if offset > 0 => {
                // The partial file is at least as long as the file; only a full read can tell
                // whether it is the same file.
                return Err(DownloadError::Protocol(format!(
                    "the server has no bytes after offset {offset} (HTTP 416); starting over"
                )));
            }
            403 | 404 | 410 | 400 => {
                let detail = response.text().await.unwrap_or_default();
                return Err(DownloadError::UrlRejected {
                    status: status.as_u16(),
                    detail: s3_code(&detail),
                });
            }
            code if status.is_server_error() || code == 429 || code == 408 => {
                return Err(DownloadError::Transient(format!("HTTP {code}")));
            }
            code => {
                return Err(DownloadError::Protocol(format!("unexpected HTTP {code}")));
            }
        }
        if let Some(size) = total
            && size > self.policy.max_bytes
        {
            return Err(DownloadError::TooLarge {
                size,
                limit: self.policy.max_bytes,
            });
        }
        let mut writer = Writer::start(partial.to_path_buf(), offset)?;
        let started = Instant::now();
        let mut received: u64 = 0;
        let mut last_sync = Instant::now();
        let mut stream = response.bytes_stream();
        let result = async {
            loop {
                let next = stream.next().await;
                let chunk = match next {
                    Some(chunk) => chunk.map_err(transport)?,
                    None => break,
                };
                received += chunk.len() as u64;
                if offset + received > self.policy.max_bytes {
                    return Err(DownloadError::TooLarge {
                        size: offset + received,
                        limit: self.policy.max_bytes,
                    });
                }
                writer.push(&chunk).await?;
                if let Some(rate) = self.policy.rate_limit.filter(|r| *r > 0) {
                    let due = Duration::from_secs_f64(received as f64 / rate as f64);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
                if last_sync.elapsed() >= self.policy.sync_every {
                    let synced = writer.sync().await?;
                    progress
                        .synced(synced, total)
                        .await
                        .map_err(DownloadError::Progress)?;
                    last_sync = Instant::now();
                }
            }
            writer.send_block().await
        }
        .await;
        if let Err(error) = result {
            // Keep what arrived: sync it and report the offset, so the next attempt resumes.
            if !writer.stopped
                && let Ok(synced) = writer.sync().await
            {
                let _ = progress.synced(synced, total).await;
            }
            let stopped = writer.stopped;
            return Err(match writer.finish().await {
                // The writer thread's own error says what went wrong with the file.
                Err(writer_error) if stopped => writer_error,
                _ => error,
            });
        }
        let (bytes, timings) = writer.finish().await?;
        progress
            .synced(bytes, total.or(Some(bytes)))
            .await
            .map_err(DownloadError::Progress)?;
        if let Some(size) = total
            && size != bytes
        {
            return Err(DownloadError::Transient(format!(
                "the connection ended after {bytes} of {size} bytes"
            )));
        }
        Ok(Fetched {
            bytes,
            resumed_from: offset,
            timings,
        })
    }
}

/// The redirect policy's error when the limit is reached (recognised again in [`transport`]).
#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
struct RedirectLimit(usize);

fn transport(error: reqwest::Error) -> DownloadError {
    if error.is_redirect() {
        if let Some(RedirectLimit(max)) =
            std::error::Error::source(&error).and_then(|s| s.downcast_ref::<RedirectLimit>())
        {
            return DownloadError::TooManyRedirects {
                url: error.url().map(|u| redact(u.as_str())).unwrap_or_default(),
                max: *max,
            };
        }
        return DownloadError::UrlRefused {
            url: error.url().map(|u| redact(u.as_str())).unwrap_or_default(),
            reason: std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.to_string()),
        };
    }
    DownloadError::Transient(error.without_url().to_string())
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = total.trim().parse().ok();
    Some((start, total))
}

/// The `<Code>` of an S3 XML error, or the start of the body.
fn s3_code(body: &str) -> String {
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    let message = body
        .split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(message, _)| message.to_string());
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.chars().take(200).collect(),
    }
}

enum Message {
    Data(Vec<u8>),
    Sync(oneshot::Sender<u64>),
}

/// The writer thread and its feed: network chunks are copied into blocks of [`BLOCK`] bytes that
/// go to a thread appending them to the partial file off the async runtime (so receiving and
/// writing overlap), which starts writeback every [`WRITEBACK_EVERY`] bytes and hands each
/// written block back for reuse. The same few blocks carry the whole download: no allocation
/// per block, and no fresh memory for the kernel to fault in and zero.
struct Writer {
    tx: mpsc::Sender<Message>,
    handle: tokio::task::JoinHandle<Result<(u64, WriterTimings), DownloadError>>,
    path: PathBuf,
    /// Written blocks coming back from the writer thread.
    free: mpsc::Receiver<Vec<u8>>,
    /// Blocks allocated so far (at most [`POOL_BLOCKS`]).
    allocated: usize,
    /// The block being filled.
    block: Vec<u8>,
    /// The writer thread has stopped (its result says why).
    stopped: bool,
}

/// Blocks of a download: those queued in the channel, the one being written, the one being
/// filled.
const POOL_BLOCKS: usize = CHANNEL_CHUNKS + 2;

impl Writer {
    fn start(path: PathBuf, offset: u64) -> Result<Self, DownloadError> {
        let (tx, mut rx) = mpsc::channel::<Message>(CHANNEL_CHUNKS);
        let (free_tx, free) = mpsc::channel::<Vec<u8>>(POOL_BLOCKS);
        let thread_path = path.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let path = thread_path;
            let file = open_partial(&path, offset)?;
            let file = std::sync::Arc::new(file);
            let writeback = Writeback::new(file.clone());
            let mut written = offset;
            let mut written_back = offset;
            let mut timings = WriterTimings::default();
            loop {
                let waiting = std::time::Instant::now();
                let Some(message) = rx.blocking_recv() else {
                    break;
                };
                timings.idle += waiting.elapsed();
                match message {
                    Message::Data(block) => {
                        let started = std::time::Instant::now();
                        // Blocks are large already: written as they are, without a buffer
                        // (and its copy) in between.
                        (&*file)
                            .write_all(&block)
                            .map_err(|e| DownloadError::io("cannot write", &path, e))?;
                        written += block.len() as u64;
                        let mut block = block;
                        block.clear();
                        let _ = free_tx.try_send(block);
                        // Writeback started every few tens of MiB keeps the final fsync short:
                        // without it the whole file's dirty pages wait for the end.
                        if written - written_back >= WRITEBACK_EVERY {
                            writeback.start();
                            written_back = written;
                        }
                        timings.write += started.elapsed();
                    }
                    Message::Sync(reply) => {
                        writeback.start();
                        let _ = reply.send(written);
                    }
                }
            }
            let started = std::time::Instant::now();
            file.sync_all()
                .map_err(|e| DownloadError::io("cannot sync", &path, e))?;
            timings.fsync = started.elapsed();
            Ok((written, timings))
        });
        Ok(Self {
            tx,
            handle,
            path,
            free,
            allocated: 0,
            block: Vec::new(),
            stopped: false,
        })
    }

    /// Copies `data` into blocks, sending each full one to the writer thread.
    async fn push(&mut self, mut data: &[u8]) -> Result<(), DownloadError> {
        while !data.is_empty() {
            if self.block.capacity() == 0 {
                self.block = self.free_block().await?;
            }
            let room = BLOCK - self.block.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.extend_from_slice(now);
            data = rest;
            if self.block.len() >= BLOCK {
                self.send_block().await?;
            }
        }
        Ok(())
    }

    /// A block to fill: one the writer thread gave back, a new one while fewer than
    /// [`POOL_BLOCKS`] exist, or else the next one given back.
    async fn free_block(&mut self) -> Result<Vec<u8>, DownloadError> {
        if let Ok(block) = self.free.try_recv() {
            return Ok(block);
        }
        if self.allocated < POOL_BLOCKS {
            self.allocated += 1;
            return Ok(Vec::with_capacity(BLOCK));
        }
        match self.free.recv().await {
            Some(block) => Ok(block),
            None => Err(self.stopped()),
        }
    }

    /// Sends the block being filled (if it holds anything) to the writer thread.
    async fn send_block(&mut self) -> Result<(), DownloadError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.block);
        if self.tx.send(Message::Data(block)).await.is_err() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// Sends the block being filled, then asks the writer thread how many bytes of the file are
    /// with the operating system (and so survive this process).
    async fn sync(&mut self) -> Result<u64, DownloadError> {
        self.send_block().await?;
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Message::Sync(reply)).await.is_err() {
            return Err(self.stopped());
        }
        match answer.await {
            Ok(offset) => Ok(offset),
            Err(_) => Err(self.stopped()),
        }
    }

    /// The writer thread stopped early; [`Writer::finish`] returns the error that stopped it.
    fn stopped(&mut self) -> DownloadError {
        self.stopped = true;
        DownloadError::io(
            "the writer stopped while writing",
            &self.path,
            std::io::Error::other("the file could not be written"),
        )
    }

    /// Waits for the writer thread: the bytes in the file (synced) and its timings, or the
    /// error that stopped it.
    async fn finish(self) -> Result<(u64, WriterTimings), DownloadError> {
        drop(self.tx);
        self.handle
            .await
            .map_err(|e| DownloadError::Transient(format!("the writer thread failed: {e}")))?
    }
}

/// Starts writing the partial file's dirty pages to disk (Linux `sync_file_range`) on another
/// blocking thread, so the final fsync before the rename finds little left to write and the disk
/// works while the network does. Submitting the writeback takes CPU time (the filesystem maps and
/// queues the pages); on its own thread it does not hold up the writes. At most one start runs
/// at a time: a start asked for while one runs is skipped, as the running one, or the next,
/// covers the same pages. Best effort: elsewhere, or on failure, the final fsync does it all.
struct Writeback {
    file: std::sync::Arc<File>,
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Writeback {
    fn new(file: std::sync::Arc<File>) -> Self {
        Self {
            file,
            running: std::sync::Arc::default(),
        }
    }

    fn start(&self) {
        use std::sync::atomic::Ordering;
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let file = self.file.clone();
        let running = self.running.clone();
        tokio::task::spawn_blocking(move || {
            start_writeback(&file);
            running.store(false, Ordering::Release);
        });
    }
}

/// Schedules writeback of all of `file`'s dirty pages without waiting for it to complete.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor; the call only schedules writeback.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Opens the partial file cut back to `offset` (bytes beyond it were never confirmed), positioned
/// to append.
fn open_partial(path: &Path, offset: u64) -> Result<File, DownloadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(DATA_FILE_MODE)
        .open(path)
        .map_err(|e| DownloadError::io("cannot open", path, e))?;
    file.set_len(offset)
        .map_err(|e| DownloadError::io("cannot truncate", path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| DownloadError::io("cannot seek", path, e))?;
    Ok(file)
}

/// What [`check`] found in a complete download.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Size of the file as read back.
    pub bytes: u64,
    /// Hex sha256 of the file as read back.
    pub sha256: String,
    /// Size of the decompressed content.
    pub uncompressed_bytes: u64,
    /// How long hashing took (it runs beside the slower gzip decode).
    pub hash_time: Duration,
}

/// Checks a complete download: the sha256 of the file and a full gzip decode, on two threads
/// that each read the file back. Both describe the bytes on disk, whichever attempts wrote
/// them, so a resumed download needs no saved hash state and the manifest's hash is that of the
/// file as installed. Hashing beside the decode (which is several times slower) costs the job no
/// time, where hashing while downloading competes with the download for the CPU.
pub async fn check(path: &Path) -> Result<Checked, DownloadError> {
    let hashed = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || hash_file(&path))
    };
    let decoded = verify_gzip(path).await;
    let hashed = hashed
        .await
        .map_err(|e| DownloadError::Transient(format!("hashing failed to run: {e}")))?;
    let uncompressed_bytes = decoded?;
    let (bytes, sha256, hash_time) = hashed?;
    Ok(Checked {
        bytes,
        sha256,
        uncompressed_bytes,
        hash_time,
    })
}

/// Size and hex sha256 of the file at `path`, and how long that took.
fn hash_file(path: &Path) -> Result<(u64, String, Duration), DownloadError> {
    let started = std::time::Instant::now();
    let mut file = File::open(path).map_err(|e| DownloadError::io("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DownloadError::io("cannot read", path, e)),
        };
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize()), started.elapsed()))
}

/// Reads the whole file through a gzip decoder (all members) and discards the output: a
/// truncated or corrupted file fails its CRC or length check. Runs off the async runtime.
pub async fn verify_gzip(path: &Path) -> Result<u64, DownloadError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = File::open(&path).map_err(|e| DownloadError::io("cannot open", &path, e))?;
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut decoder = flate2::read::MultiGzDecoder::new(reader);
        // A large output buffer: the decoder's per-call overhead dominates with small ones.
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match decoder.read(&mut buffer) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(DownloadError::Corrupt {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
    })
    .await
    .map_err(|e| DownloadError::Transient(format!("the gzip check failed to run: {e}")))?
}

/// Moves a complete partial file to `destination` atomically (same directory tree, one
/// rename), with mode 0640, and syncs the directory so the rename survives a crash.
pub fn install(partial: &Path, destination: &Path) -> Result<(), DownloadError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(partial, std::fs::Permissions::from_mode(DATA_FILE_MODE))
        .map_err(|e| DownloadError::io("cannot set permissions of", partial, e))?;
    std::fs::rename(partial, destination)
        .map_err(|e| DownloadError::io("cannot rename into place", destination, e))?;
    sync_dir(destination)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), mode 0640.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(DATA_FILE_MODE)
        .open(&tmp)
        .map_err(|e| DownloadError::io("cannot create", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| DownloadError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| DownloadError::io("cannot rename into place", path, e))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), DownloadError> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DownloadError::io("cannot sync directory", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_the_simulators_loopback_host_is_allowed() {
        let sim = DownloadPolicy::for_base_url("http://127.0.0.1:4010/api/1.0");
        assert!(sim.check("http://127.0.0.1:4010/_sim/downloads/x").is_ok());
        assert!(
            sim.check("https://s3.amazonaws.com/bucket/key?X-Amz=1")
                .is_ok()
        );
        let error = sim.check("http://example.com/file.gz").unwrap_err();
        assert!(matches!(error, DownloadError::UrlRefused { .. }), "{error}");
        assert!(sim.check("ftp://127.0.0.1/file").is_err());
        assert!(sim.check("https://user:pw@example.com/file").is_err());
        let real = DownloadPolicy::for_base_url("https://app.asana.com/api/1.0");
        assert!(
            real.check("http://127.0.0.1:4010/_sim/downloads/x")
                .is_err()
        );
        assert!(
            real.check("https://asana-export.s3.amazonaws.com/x")
                .is_ok()
        );
        // The signature never appears in the error.
        let error = real
            .check("http://example.com/f?X-Amz-Signature=secret")
            .unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn content_ranges_and_s3_errors_are_read() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(
            s3_code(
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            ),
            "AccessDenied: Request has expired"
        );
    }

    /// Bytes of a recognisable pattern: position-dependent, so a block written twice, out of
    /// order or with stale bytes from its previous use shows up in the comparison.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_reuses_its_blocks_and_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let data = pattern(POOL_BLOCKS * BLOCK * 3 + 12_345);
        let mut writer = Writer::start(path.clone(), 0).unwrap();
        // Chunks of awkward sizes, straddling block boundaries, with progress syncs between.
        let sizes = [1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 100_000, 3 * BLOCK + 5];
        let mut at = 0;
        for (i, size) in sizes.iter().cycle().enumerate() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            writer.push(&data[at..end]).await.unwrap();
            at = end;
            if i % 5 == 4 {
                assert_eq!(writer.sync().await.unwrap(), at as u64);
            }
        }
        writer.send_block().await.unwrap();
        assert!(writer.allocated <= POOL_BLOCKS, "{}", writer.allocated);
        let (bytes, _) = writer.finish().await.unwrap();
        assert_eq!(bytes, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data, "the file differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_cuts_unconfirmed_bytes_and_appends_from_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let data = pattern(300_000);
        // 200,000 bytes on disk, of which only 150,000 were confirmed; the rest is garbage.
        let mut on_disk = data[..150_000].to_vec();
        on_disk.extend(std::iter::repeat_n(0xEE, 50_000));
        std::fs::write(&path, &on_disk).unwrap();
        let mut writer = Writer::start(path.clone(), 150_000).unwrap();
        writer.push(&data[150_000..]).await.unwrap();
        writer.send_block().await.unwrap();
        let (bytes, _) = writer.finish().await.unwrap();
        assert_eq!(bytes, 300_000);
        assert!(std::fs::read(&path).unwrap() == data, "the file differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_cannot_write_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened as the partial file.
        let mut writer = Writer::start(dir.path().to_path_buf(), 0).unwrap();
        let data = pattern(POOL_BLOCKS * BLOCK * 2);
        let pushed = writer.push(&data).await;
        assert!(pushed.is_err(), "the writer thread stopped at once");
        assert!(writer.stopped);
        let error = writer.finish().await.unwrap_err();
        assert!(error.to_string().contains("cannot open"), "{error}");
    }
}
