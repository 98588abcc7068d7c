//! The `file` sink: JSON Lines segments in a directory, a manifest chain beside them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use super::manifest::{self, ChainProblem, EntryBody, MANIFEST_FILE, ManifestEntry};
use super::{Batch, RecordMark, RecordSink, Recovered, SinkError};
use crate::config::jobs::SettingsCheck;

/// Settings of the file sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSettings {
    /// Where the stream directories go; checked writable when the job is loaded
    pub dir: PathBuf,
    /// Compress sealed segments (`.jsonl.gz`)
    #[serde(default)]
    pub gzip: bool,
    /// Seal a segment once it holds this many bytes
    #[serde(default = "default_rotate_bytes")]
    #[schemars(range(min = 1))]
    pub rotate_bytes: u64,
    /// Seal a segment once it is this old (checked at every commit and at the end of every run)
    #[serde(
        default = "default_rotate_every",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "crate::config::values::DurationText")]
    pub rotate_every: Duration,
}

impl FileSinkSettings {
    /// The directory must be writable.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        check.writable_dir("dir", &self.dir);
    }
}

fn default_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_rotate_every() -> Duration {
    Duration::from_secs(3600)
}

/// Name of the open segment's data (uncompressed JSON Lines) in a stream's directory.
pub const OPEN_DATA: &str = ".open.jsonl";
/// Name of the open segment's journal: one line per committed batch with its cursor.
pub const OPEN_JOURNAL: &str = ".open.journal";
/// Mode of every file the sink writes.
const FILE_MODE: u32 = 0o640;
/// Mode of the directories it creates.
const DIR_MODE: u32 = 0o750;

/// One journal line: a batch the open segment durably holds, and where its bytes end.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
struct JournalLine {
    sequence: u64,
    /// Length of the open data after this batch.
    end: u64,
    /// Records in the open segment after this batch.
    count: u64,
    /// First record of the segment.
    first: RecordMark,
    /// Last record of this batch.
    last: RecordMark,
    /// Sequence of the segment's first batch.
    first_sequence: u64,
    /// When the segment was opened (job clock).
    opened_at: DateTime<Utc>,
    cursor: serde_json::Value,
}

/// What the sink knows about one stream, loaded from disk on first use.
#[derive(Debug, Default)]
struct StreamState {
    /// Last sealed entry.
    head: Option<ManifestEntry>,
    /// Last journal line of the open segment.
    open: Option<JournalLine>,
    /// The open segment's sealed file, renamed into place by a seal that a crash stopped
    /// before its manifest entry. Its name is public from the moment of the rename, so the
    /// next seal records that file as it is instead of writing the name again (by then the
    /// open segment may hold more batches, and the same name would get other bytes).
    interrupted_seal: Option<String>,
}

impl StreamState {
    fn last_sequence(&self) -> Option<u64> {
        match (&self.open, &self.head) {
            (Some(open), _) => Some(open.sequence),
            (None, Some(head)) => Some(head.body.last_sequence),
            (None, None) => None,
        }
    }
}

/// The file sink: JSON Lines segments, sealed by size or age into `.jsonl` (or `.jsonl.gz`)
/// files written to a temporary name, fsynced and renamed, each listed in a hash-chained
/// `manifest.jsonl`. Batches of the open segment are appended and fsynced together with a
/// journal line holding the job's cursor, so a batch is durable when `commit` returns.
#[derive(Debug)]
pub struct FileSink {
    settings: FileSinkSettings,
    streams: Arc<Mutex<HashMap<String, StreamState>>>,
    /// Exclusive locks on the streams this sink writes (`.lock`, flock), held until the sink
    /// is dropped: a run whose lease was lost (a zombie) and the run that took over must never
    /// write the same stream at once, in one process or several.
    locks: Arc<Mutex<HashMap<String, std::fs::File>>>,
}

/// Name of a stream's lock file.
pub const LOCK_FILE: &str = ".lock";

fn lock_stream(dir: &Path) -> Result<std::fs::File, SinkError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io("open", &path))?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            return Err(SinkError::Transient {
                sink: "file",
                message: format!(
                    "{} is being written by another run (its lock {} is held); this run will retry once that run has ended",
                    dir.display(),
                    path.display()
                ),
            });
        }
        return Err(io("lock", &path)(error));
    }
    Ok(file)
}

impl FileSink {
    /// A sink writing under `settings.dir` (created with mode 0750 if missing).
    pub fn new(settings: FileSinkSettings) -> Result<FileSink, SinkError> {
        create_dir(&settings.dir)?;
        Ok(FileSink {
            settings,
            streams: Arc::new(Mutex::new(HashMap::new())),
            locks: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The directory of a stream's segments and manifest.
    pub fn stream_dir(&self, stream: &str) -> PathBuf {
        self.settings.dir.join(stream)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        stream: &str,
        work: impl FnOnce(&FileSinkSettings, &Path, &mut StreamState) -> Result<T, SinkError>
        + Send
        + 'static,
    ) -> Result<T, SinkError> {
        check_stream_name(stream)?;
        let settings = self.settings.clone();
        let streams = self.streams.clone();
        let locks = self.locks.clone();
        let stream = stream.to_string();
        let dir = self.stream_dir(&stream);
        tokio::task::spawn_blocking(move || {
            let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
            {
                let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
                if !locks.contains_key(&stream) {
                    create_dir(&dir)?;
                    locks.insert(stream.clone(), lock_stream(&dir)?);
                }
            }
            if !streams.contains_key(&stream) {
                let state = load_stream(&dir)?;
                streams.insert(stream.clone(), state);
            }
            let state = streams.get_mut(&stream).expect("inserted above");
            let result = work(&settings, &dir, state);
            if result.is_err() {
                // Reload from disk next time: the error may have left a half-written batch.
                streams.remove(&stream);
            }
            result
        })
        .await
        .map_err(|error| SinkError::Transient {
            sink: "file",
            message: format!("the writer task failed: {error}"),
        })?
    }
}

#[async_trait]
impl RecordSink for FileSink {
    async fn commit(&self, batch: Batch) -> Result<(), SinkError> {
        let stream = batch.stream.clone();
        self.blocking(&stream, move |settings, dir, state| {
            if state
                .last_sequence()
                .is_some_and(|last| batch.sequence <= last)
            {
                return Ok(());
            }
            if batch.records.is_empty() {
                return Err(SinkError::Rejected {
                    sink: "file",
                    message: "an empty batch cannot be committed (it has no first record)".into(),
                });
            }
            if state.interrupted_seal.is_some()
                || state
                    .open
                    .as_ref()
                    .is_some_and(|open| age_due(settings, open.opened_at, batch.now))
            {
                seal(settings, dir, state, batch.now)?;
            }
            append(dir, state, &batch)?;
            if state
                .open
                .as_ref()
                .is_some_and(|o| o.end >= settings.rotate_bytes)
            {
                seal(settings, dir, state, batch.now)?;
            }
            Ok(())
        })
        .await
    }

    async fn recover(&self, stream: &str) -> Result<Option<Recovered>, SinkError> {
        self.blocking(stream, |_, _, state| {
            Ok(match (&state.open, &state.head) {
                (Some(open), _) => Some(Recovered {
                    sequence: open.sequence,
                    cursor: open.cursor.clone(),
                }),
                (None, Some(head)) => Some(Recovered {
                    sequence: head.body.last_sequence,
                    cursor: head.body.cursor.clone(),
                }),
                (None, None) => None,
            })
        })
        .await
    }

    async fn rotate_if_due(&self, stream: &str, now: DateTime<Utc>) -> Result<(), SinkError> {
        self.blocking(stream, move |settings, dir, state| {
            if state.interrupted_seal.is_some()
                || state
                    .open
                    .as_ref()
                    .is_some_and(|open| age_due(settings, open.opened_at, now))
            {
                seal(settings, dir, state, now)?;
            }
            Ok(())
        })
        .await
    }
}

fn age_due(settings: &FileSinkSettings, opened_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    (now - opened_at)
        .to_std()
        .is_ok_and(|age| age >= settings.rotate_every)
}

fn check_stream_name(stream: &str) -> Result<(), SinkError> {
    let ok = !stream.is_empty()
        && !stream.starts_with('.')
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SinkError::Config {
            sink: "file",
            message: format!(
                "stream name {stream:?} cannot be a directory name; use letters, digits, '-', '_' or '.'"
            ),
        })
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + use<> {
    let path = path.display().to_string();
    move |source| SinkError::Io {
        action,
        path,
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), SinkError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io("create directory", dir))
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn open_append(path: &Path) -> Result<std::fs::File, SinkError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io("open", path))
}

/// Writes `bytes` to `path` atomically: a temporary file (0640) in the same directory, fsynced,
/// renamed over `path`, the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&temp)
        .map_err(io("create", &temp))?;
    file.write_all(bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("fsync", &temp))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(io("rename", &temp))?;
    sync_dir(dir)
}

/// Reads a stream's manifest head and open segment, repairing what a crash left behind: a
/// batch written without its journal line is cut off, a seal that finished renaming and
/// recording its segment but not removing the open files is completed.
fn load_stream(dir: &Path) -> Result<StreamState, SinkError> {
    create_dir(dir)?;
    let mut state = StreamState::default();
    let manifest_path = dir.join(MANIFEST_FILE);
    match std::fs::read_to_string(&manifest_path) {
        Ok(text) => {
            let (entries, problems) = manifest::parse_manifest(&text);
            if let Some(problem) = problems.first() {
                return Err(SinkError::Corrupt {
                    sink: "file",
                    message: format!(
                        "{}: {problem}; run `asana-worker verify --dir {}` and restore the manifest from a backup",
                        manifest_path.display(),
                        dir.display()
                    ),
                });
            }
            state.head = entries.into_iter().last().map(|(_, entry)| entry);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io("read", &manifest_path)(error)),
    }
    let journal_path = dir.join(OPEN_JOURNAL);
    let data_path = dir.join(OPEN_DATA);
    let journal = match std::fs::read(&journal_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(io("read", &journal_path)(error)),
    };
    // Complete lines only: a line cut by a crash has no newline and is dropped.
    let mut good_len = 0usize;
    let mut last: Option<JournalLine> = None;
    for line in journal.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        match serde_json::from_slice::<JournalLine>(line) {
            Ok(entry) => {
                good_len += line.len();
                last = Some(entry);
            }
            Err(_) => break,
        }
    }
    let sealed_through = state.head.as_ref().map(|h| h.body.last_sequence);
    match last {
        Some(open) if sealed_through.is_none_or(|s| open.sequence > s) => {
            if good_len < journal.len() {
                truncate(&journal_path, good_len as u64)?;
            }
            truncate(&data_path, open.end)?;
            let next_index = state.head.as_ref().map_or(1, |h| h.body.index + 1);
            state.interrupted_seal = find_interrupted_seal(dir, next_index, &open)?;
            state.open = Some(open);
        }
        _ => {
            // Nothing open, or the open segment was sealed before the crash.
            remove_if_exists(&data_path)?;
            remove_if_exists(&journal_path)?;
        }
    }
    // Temporary files of an interrupted seal or manifest write.
    if let Ok(read) = std::fs::read_dir(dir) {
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") {
                remove_if_exists(&entry.path())?;
            }
        }
    }
    Ok(state)
}

/// Name of a sealed segment: the stream, its index and when it was opened.
fn segment_name(stream: &str, index: u64, opened_at: DateTime<Utc>, gzip: bool) -> String {
    format!(
        "{stream}-{index:06}-{}.jsonl{}",
        opened_at.format("%Y%m%dT%H%M%SZ"),
        if gzip { ".gz" } else { "" }
    )
}

fn stream_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The sealed file of the open segment `open` that a seal interrupted by a crash left in place
/// (written and renamed, not yet in the manifest), if there is one: the name the next seal
/// would take, plain or gzipped (`gzip` may have been changed since), holding exactly the open
/// segment. A file under that name with other content is not ours to replace.
fn find_interrupted_seal(
    dir: &Path,
    index: u64,
    open: &JournalLine,
) -> Result<Option<String>, SinkError> {
    let stream = stream_of(dir);
    for gzip in [false, true] {
        let name = segment_name(&stream, index, open.opened_at, gzip);
        let path = dir.join(&name);
        let stored = match std::fs::read(&path) {
            Ok(stored) => stored,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io("read", &path)(error)),
        };
        let content = if gzip {
            let mut text = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&stored[..]),
                &mut text,
            )
            .map(|_| text)
            .ok()
        } else {
            Some(stored)
        };
        let data_path = dir.join(OPEN_DATA);
        let data = std::fs::read(&data_path).map_err(io("read", &data_path))?;
        let open_data = &data[..(open.end as usize).min(data.len())];
        if content.as_deref() == Some(open_data) {
            tracing::info!(segment = %path.display(), "Completing a seal a crash interrupted");
            return Ok(Some(name));
        }
        return Err(SinkError::Corrupt {
            sink: "file",
            message: format!(
                "{} is not in the manifest and does not hold the open segment it is named after; \
                 move it out of the directory (the open segment will then be sealed under that name)",
                path.display()
            ),
        });
    }
    Ok(None)
}

fn truncate(path: &Path, len: u64) -> Result<(), SinkError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    if file.metadata().map_err(io("stat", path))?.len() != len {
        file.set_len(len).map_err(io("truncate", path))?;
        file.sync_all().map_err(io("fsync", path))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), SinkError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io("remove", path)(error)),
    }
}

/// Appends a batch to the open segment: data first (fsynced), then its journal line (fsynced).
fn append(dir: &Path, state: &mut StreamState, batch: &Batch) -> Result<(), SinkError> {
    use std::io::Write;
    let data_path = dir.join(OPEN_DATA);
    let journal_path = dir.join(OPEN_JOURNAL);
    let mut bytes = Vec::with_capacity(batch.records.iter().map(|r| r.get().len() + 1).sum());
    for record in &batch.records {
        bytes.extend_from_slice(record.get().as_bytes());
        bytes.push(b'\n');
    }
    let created = state.open.is_none();
    let mut data = open_append(&data_path)?;
    data.write_all(&bytes).map_err(io("write", &data_path))?;
    data.sync_all().map_err(io("fsync", &data_path))?;
    let (end, count, first, first_sequence, opened_at) = match &state.open {
        Some(open) => (
            open.end + bytes.len() as u64,
            open.count + batch.records.len() as u64,
            open.first.clone(),
            open.first_sequence,
            open.opened_at,
        ),
        None => (
            bytes.len() as u64,
            batch.records.len() as u64,
            batch.first.clone(),
            batch.sequence,
            batch.now,
        ),
    };
    let line = JournalLine {
        sequence: batch.sequence,
        end,
        count,
        first,
        last: batch.last.clone(),
        first_sequence,
        opened_at,
        cursor: batch.cursor.clone(),
    };
    let mut text = serde_json::to_vec(&line).unwrap_or_default();
    text.push(b'\n');
    let mut journal = open_append(&journal_path)?;
    journal
        .write_all(&text)
        .map_err(io("write", &journal_path))?;
    journal.sync_all().map_err(io("fsync", &journal_path))?;
    if created {
        sync_dir(dir)?;
    }
    state.open = Some(line);
    Ok(())
}

/// Seals the open segment: its final file written atomically (gzipped if configured), then the
/// manifest rewritten atomically with the new entry, then the open files removed.
fn seal(
    settings: &FileSinkSettings,
    dir: &Path,
    state: &mut StreamState,
    now: DateTime<Utc>,
) -> Result<(), SinkError> {
    use std::io::Write;
    let Some(open) = state.open.clone() else {
        return Ok(());
    };
    let index = state.head.as_ref().map_or(1, |h| h.body.index + 1);
    let stream = stream_of(dir);
    let (file, stored) = match state.interrupted_seal.clone() {
        // Checked when the stream was loaded: it holds exactly the open segment.
        Some(file) => {
            let path = dir.join(&file);
            let stored = std::fs::read(&path).map_err(io("read", &path))?;
            (file, stored)
        }
        None => {
            let data_path = dir.join(OPEN_DATA);
            let data = std::fs::read(&data_path).map_err(io("read", &data_path))?;
            let data = &data[..(open.end as usize).min(data.len())];
            let stored = if settings.gzip {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder
                    .write_all(data)
                    .map_err(io("compress", &data_path))?;
                encoder.finish().map_err(io("compress", &data_path))?
            } else {
                data.to_vec()
            };
            let file = segment_name(&stream, index, open.opened_at, settings.gzip);
            write_atomic(&dir.join(&file), &stored)?;
            (file, stored)
        }
    };
    let body = EntryBody {
        version: manifest::FORMAT_VERSION,
        stream: stream.clone(),
        index: 0,
        file,
        count: open.count,
        bytes: stored.len() as u64,
        sha256: manifest::sha256_hex(&stored),
        first: open.first.clone(),
        last: open.last.clone(),
        first_sequence: open.first_sequence,
        last_sequence: open.sequence,
        cursor: open.cursor.clone(),
        sealed_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        prev_hash: String::new(),
    };
    let entry = ManifestEntry::chain(body, state.head.as_ref());
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut text = match std::fs::read(&manifest_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(io("read", &manifest_path)(error)),
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(entry.to_line().as_bytes());
    write_atomic(&manifest_path, &text)?;
    state.head = Some(entry);
    state.open = None;
    state.interrupted_seal = None;
    remove_if_exists(&journal_path_of(dir))?;
    remove_if_exists(&dir.join(OPEN_DATA))?;
    sync_dir(dir)
}

fn journal_path_of(dir: &Path) -> PathBuf {
    dir.join(OPEN_JOURNAL)
}

/// Everything `verify` found in one stream directory (a directory holding `manifest.jsonl`).
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Sealed segments listed.
    pub segments: u64,
    /// Records in them.
    pub records: u64,
    /// Records in the open segment (committed, not sealed yet).
    pub open_records: u64,
    /// Every problem, in the order found.
    pub problems: Vec<ChainProblem>,
}

/// Verifies a stream directory: the manifest chain, every listed segment's bytes and count,
/// and that no sealed segment file is unlisted.
pub fn verify_stream_dir(dir: &Path) -> Result<StreamReport, SinkError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    // No manifest yet: nothing sealed (the open segment may hold batches).
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(io("read", &manifest_path)(error)),
    };
    let (entries, mut problems) = manifest::parse_manifest(&text);
    problems.extend(manifest::verify_chain(&entries));
    let mut report = StreamReport::default();
    let mut listed = std::collections::BTreeSet::new();
    for (_, entry) in &entries {
        listed.insert(entry.body.file.clone());
        report.segments += 1;
        report.records += entry.body.count;
        let path = dir.join(&entry.body.file);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io("read", &path)(error)),
        };
        problems.extend(manifest::verify_segment(entry, stored.as_deref()));
    }
    // The open segment (its batches not sealed yet), and the names its seal takes: a seal a
    // crash interrupted may have left its file there, which the next commit records.
    let last_entry = entries.last().map(|(_, entry)| &entry.body);
    let open = std::fs::read(dir.join(OPEN_JOURNAL))
        .ok()
        .and_then(|journal| {
            journal
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<JournalLine>(l).ok())
                .next_back()
                .filter(|open| last_entry.is_none_or(|last| open.sequence > last.last_sequence))
        });
    let being_sealed: Vec<String> = open
        .iter()
        .flat_map(|open| {
            let index = last_entry.map_or(1, |last| last.index + 1);
            [false, true].map(|gzip| segment_name(&stream_of(dir), index, open.opened_at, gzip))
        })
        .collect();
    let read = std::fs::read_dir(dir).map_err(io("list", dir))?;
    let mut unlisted: Vec<String> = read
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| {
            !name.starts_with('.')
                && (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz"))
                && name != MANIFEST_FILE
                && !listed.contains(name)
                && !being_sealed.contains(name)
        })
        .collect();
    unlisted.sort();
    problems.extend(
        unlisted
            .into_iter()
            .map(|file| ChainProblem::UnlistedSegment { file }),
    );
    report.open_records = open.map_or(0, |open| open.count);
    report.problems = problems;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn settings(dir: &Path, gzip: bool, rotate_bytes: u64) -> FileSinkSettings {
        FileSinkSettings {
            dir: dir.to_path_buf(),
            gzip,
            rotate_bytes,
            rotate_every: Duration::from_secs(3600),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn batch(sequence: u64, gids: std::ops::Range<u64>, now: DateTime<Utc>) -> Batch {
        let records: Vec<Box<serde_json::value::RawValue>> = gids
            .clone()
            .map(|g| {
                serde_json::value::RawValue::from_string(format!(
                    "{{\"gid\":\"{g}\",  \"created_at\":\"2026-03-01T00:00:00Z\"}}"
                ))
                .unwrap()
            })
            .collect();
        let mark = |g: u64| RecordMark {
            gid: g.to_string(),
            created_at: "2026-03-01T00:00:00Z".into(),
        };
        Batch {
            stream: "audit".into(),
            sequence,
            records,
            first: mark(gids.start),
            last: mark(gids.end - 1),
            cursor: serde_json::json!({ "after": gids.end - 1 }),
            now,
        }
    }

    fn all_records(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap_or_default();
        let (entries, _) = manifest::parse_manifest(&text);
        let mut lines = Vec::new();
        for (_, entry) in entries {
            let bytes = std::fs::read(dir.join(&entry.body.file)).unwrap();
            let text = if entry.body.file.ends_with(".gz") {
                let mut out = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut out,
                )
                .unwrap();
                out
            } else {
                String::from_utf8(bytes).unwrap()
            };
            lines.extend(text.lines().map(str::to_string));
        }
        if let Ok(open) = std::fs::read_to_string(dir.join(OPEN_DATA)) {
            lines.extend(open.lines().map(str::to_string));
        }
        lines
    }

    #[tokio::test]
    async fn batches_are_kept_byte_for_byte_and_rotate_by_size() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 200)).unwrap();
        for i in 0..5 {
            sink.commit(batch(i + 1, i * 3..i * 3 + 3, t0()))
                .await
                .unwrap();
        }
        let dir = sink.stream_dir("audit");
        let report = verify_stream_dir(&dir).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.segments >= 2, "rotated by size: {report:?}");
        let lines = all_records(&dir);
        assert_eq!(lines.len(), 15);
        assert_eq!(
            lines[0], "{\"gid\":\"0\",  \"created_at\":\"2026-03-01T00:00:00Z\"}",
            "raw bytes, not re-serialized"
        );
        // Files are 0640 or tighter; no temporary files remain.
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !0o640, 0, "{:?} has mode {mode:o}", entry.path());
            assert!(!entry.file_name().to_string_lossy().ends_with(".tmp"));
        }
        let recovered = sink.recover("audit").await.unwrap().unwrap();
        assert_eq!(recovered.sequence, 5);
        assert_eq!(recovered.cursor, serde_json::json!({ "after": 14 }));
    }

    #[tokio::test]
    async fn a_repeated_sequence_is_stored_once() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        sink.commit(batch(1, 0..3, t0())).await.unwrap();
        sink.commit(batch(1, 0..3, t0())).await.unwrap();
        // While this sink holds the stream, another (a zombie run's) cannot write it.
        let other = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        let refused = other.commit(batch(2, 3..4, t0())).await.unwrap_err();
        assert!(refused.is_transient(), "{refused}");
        assert!(
            refused.to_string().contains("being written by another run"),
            "{refused}"
        );
        drop(other);
        drop(sink);
        // A new sink (a restarted process) sees what the first one committed.
        let again = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        again.commit(batch(1, 0..3, t0())).await.unwrap();
        again.commit(batch(2, 3..4, t0())).await.unwrap();
        assert_eq!(all_records(&again.stream_dir("audit")).len(), 4);
    }

    #[tokio::test]
    async fn segments_rotate_by_time_and_gzip() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), true, 1 << 20)).unwrap();
        sink.commit(batch(1, 0..2, t0())).await.unwrap();
        sink.rotate_if_due("audit", t0() + chrono::Duration::minutes(59))
            .await
            .unwrap();
        let dir = sink.stream_dir("audit");
        assert_eq!(verify_stream_dir(&dir).unwrap().segments, 0);
        // A commit after the hour seals the old segment first.
        sink.commit(batch(2, 2..3, t0() + chrono::Duration::minutes(61)))
            .await
            .unwrap();
        assert_eq!(verify_stream_dir(&dir).unwrap().segments, 1);
        sink.rotate_if_due("audit", t0() + chrono::Duration::minutes(125))
            .await
            .unwrap();
        let report = verify_stream_dir(&dir).unwrap();
        assert_eq!(report.segments, 2);
        assert_eq!(report.records, 3);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".jsonl.gz"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(all_records(&dir).len(), 3);
        assert!(!dir.join(OPEN_DATA).exists());
    }

    #[tokio::test]
    async fn a_batch_cut_off_by_a_crash_is_dropped_and_recovered_from_the_journal() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        sink.commit(batch(1, 0..2, t0())).await.unwrap();
        let dir = sink.stream_dir("audit");
        // A crash after the data of batch 2 was written but before its journal line.
        use std::io::Write;
        let mut data = open_append(&dir.join(OPEN_DATA)).unwrap();
        data.write_all(b"{\"gid\":\"2\"}\n{\"gid\":").unwrap();
        let mut journal = open_append(&dir.join(OPEN_JOURNAL)).unwrap();
        journal.write_all(b"{\"sequence\":2,").unwrap();
        drop(sink);
        let restarted = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        let recovered = restarted.recover("audit").await.unwrap().unwrap();
        assert_eq!(recovered.sequence, 1);
        restarted.commit(batch(2, 2..4, t0())).await.unwrap();
        let lines = all_records(&dir);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines.iter().all(|l| l.ends_with('}')));
    }

    #[tokio::test]
    async fn a_seal_interrupted_after_the_manifest_is_completed() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        sink.commit(batch(1, 0..2, t0())).await.unwrap();
        let dir = sink.stream_dir("audit");
        let journal = std::fs::read(dir.join(OPEN_JOURNAL)).unwrap();
        let data = std::fs::read(dir.join(OPEN_DATA)).unwrap();
        sink.rotate_if_due("audit", t0() + chrono::Duration::hours(2))
            .await
            .unwrap();
        // Put the open files back, as if the crash came before they were removed.
        std::fs::write(dir.join(OPEN_JOURNAL), journal).unwrap();
        std::fs::write(dir.join(OPEN_DATA), data).unwrap();
        drop(sink);
        let restarted = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        assert_eq!(
            restarted.recover("audit").await.unwrap().unwrap().sequence,
            1
        );
        assert!(!dir.join(OPEN_DATA).exists());
        assert_eq!(all_records(&dir).len(), 2);
    }

    /// A crash between a seal's rename and its manifest entry leaves the sealed file under its
    /// final name. The rebuilt state must not write that name again with other bytes: the next
    /// commit (here a different batch than any before) records the file as it is.
    #[tokio::test]
    async fn a_seal_interrupted_before_its_manifest_entry_keeps_the_file_it_renamed() {
        for gzip in [false, true] {
            let temp = tempfile::tempdir().unwrap();
            let sink = FileSink::new(settings(temp.path(), gzip, 1 << 20)).unwrap();
            sink.commit(batch(1, 0..2, t0())).await.unwrap();
            sink.commit(batch(2, 2..4, t0())).await.unwrap();
            let dir = sink.stream_dir("audit");
            let journal = std::fs::read(dir.join(OPEN_JOURNAL)).unwrap();
            let data = std::fs::read(dir.join(OPEN_DATA)).unwrap();
            sink.rotate_if_due("audit", t0() + chrono::Duration::hours(2))
                .await
                .unwrap();
            let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            let (entries, _) = manifest::parse_manifest(&text);
            let sealed = entries[0].1.body.file.clone();
            let sealed_bytes = std::fs::read(dir.join(&sealed)).unwrap();
            // The crash came after the rename: no manifest entry yet, the open files remain.
            std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
            std::fs::write(dir.join(OPEN_JOURNAL), &journal).unwrap();
            std::fs::write(dir.join(OPEN_DATA), &data).unwrap();
            drop(sink);
            let report = verify_stream_dir(&dir).unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert_eq!((report.segments, report.open_records), (0, 4));

            let restarted = FileSink::new(settings(temp.path(), gzip, 1 << 20)).unwrap();
            assert_eq!(
                restarted.recover("audit").await.unwrap().unwrap().sequence,
                2
            );
            restarted
                .commit(batch(3, 10..13, t0() + chrono::Duration::minutes(10)))
                .await
                .unwrap();
            assert_eq!(
                std::fs::read(dir.join(&sealed)).unwrap(),
                sealed_bytes,
                "{sealed} kept its bytes"
            );
            let report = verify_stream_dir(&dir).unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert_eq!((report.segments, report.records), (1, 4));
            assert_eq!(report.open_records, 3);
            let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            let (entries, _) = manifest::parse_manifest(&text);
            assert_eq!(entries[0].1.body.file, sealed);
            assert_eq!(entries[0].1.body.last_sequence, 2);
            let gids: Vec<String> = all_records(&dir)
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["gid"].to_string())
                .collect();
            assert_eq!(gids.len(), 7, "{gids:?}");
            // Sealing what followed takes the next name; the first keeps its bytes.
            restarted
                .rotate_if_due("audit", t0() + chrono::Duration::hours(3))
                .await
                .unwrap();
            assert_eq!(std::fs::read(dir.join(&sealed)).unwrap(), sealed_bytes);
            let report = verify_stream_dir(&dir).unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert_eq!((report.segments, report.records), (2, 7));
        }
    }

    /// A file under the name the open segment will be sealed to that holds something else is
    /// refused, not overwritten.
    #[tokio::test]
    async fn a_foreign_file_under_the_next_segment_name_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        sink.commit(batch(1, 0..2, t0())).await.unwrap();
        drop(sink);
        let dir = temp.path().join("audit");
        let name = segment_name("audit", 1, t0(), false);
        std::fs::write(dir.join(&name), b"{\"gid\":\"other\"}\n").unwrap();
        let restarted = FileSink::new(settings(temp.path(), false, 1 << 20)).unwrap();
        let err = restarted.recover("audit").await.unwrap_err();
        assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&name), "{err}");
        assert_eq!(
            std::fs::read(dir.join(&name)).unwrap(),
            b"{\"gid\":\"other\"}\n"
        );
    }

    #[tokio::test]
    async fn tampering_is_detected() {
        let temp = tempfile::tempdir().unwrap();
        let sink = FileSink::new(settings(temp.path(), false, 100)).unwrap();
        for i in 0..4 {
            sink.commit(batch(i + 1, i * 2..i * 2 + 2, t0()))
                .await
                .unwrap();
        }
        let dir = sink.stream_dir("audit");
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
        let (entries, _) = manifest::parse_manifest(&text);
        assert!(entries.len() >= 3);
        let first = dir.join(&entries[0].1.body.file);
        let original = std::fs::read(&first).unwrap();
        std::fs::write(&first, b"{\"gid\":\"9\"}\n").unwrap();
        let report = verify_stream_dir(&dir).unwrap();
        assert!(matches!(
            report.problems[..],
            [ChainProblem::SegmentEdited { index: 1, .. }]
        ));
        std::fs::write(&first, &original).unwrap();
        std::fs::remove_file(dir.join(&entries[1].1.body.file)).unwrap();
        let report = verify_stream_dir(&dir).unwrap();
        assert!(matches!(
            report.problems[..],
            [ChainProblem::MissingSegment { index: 2, .. }]
        ));
    }
}
