//! The `file` document sink: a copy of each document in `<dir>/<stream>/<name>`, with
//! `<name>.sha256` and `<name>.manifest.json` beside it, each created whole (temporary file,
//! fsync, link without replacing) so a reader never sees a partial document and a name, once
//! delivered, is never overwritten.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{CHECKSUM_SUFFIX, Content, Delivered, Document, DocumentSink, METADATA_SUFFIX};
use crate::config::jobs::SettingsCheck;
use crate::sinks::SinkError;

/// Mode of the files the sink writes.
const FILE_MODE: u32 = 0o640;
/// Mode of the directories it creates.
const DIR_MODE: u32 = 0o750;

/// Settings of the `file` document sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileDocumentSettings {
    /// Where the documents are copied, into one subdirectory per job (created if missing;
    /// checked writable at load)
    pub dir: PathBuf,
}

impl FileDocumentSettings {
    /// The directory must be writable.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        check.writable_dir("dir", &self.dir);
    }
}

/// The `file` document sink.
#[derive(Debug, Clone)]
pub struct FileDocumentSink {
    dir: PathBuf,
}

impl FileDocumentSink {
    /// A sink writing below the settings' directory; nothing is touched yet.
    pub fn new(settings: &FileDocumentSettings) -> Self {
        Self {
            dir: settings.dir.clone(),
        }
    }
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> SinkError + 'p {
    move |source| SinkError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// The sha256 recorded beside a delivered document, if any.
fn recorded_sha256(checksum: &Path) -> Result<Option<String>, SinkError> {
    match std::fs::read_to_string(checksum) {
        Ok(text) => Ok(text.split_whitespace().next().map(str::to_string)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io("read", checksum)(error)),
    }
}

/// Writes `bytes` to `path` whole: a temporary file in the same directory, fsynced, linked
/// into place only if nothing is there yet. Returns false when something already was.
fn create_whole(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<(), SinkError>,
) -> Result<bool, SinkError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".delivering-")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    write(temp.as_file_mut())?;
    temp.as_file().sync_all().map_err(io("fsync", path))?;
    match temp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(io("install", path)(error.error)),
    }
}

fn deliver_blocking(dir: &Path, document: &Document<'_>) -> Result<Delivered, SinkError> {
    use std::os::unix::fs::DirBuilderExt;
    super::check_name("file", document)?;
    let stream_dir = dir.join(document.stream);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&stream_dir)
        .map_err(io("create", &stream_dir))?;
    let target = stream_dir.join(document.name);
    let checksum = stream_dir.join(format!("{}{CHECKSUM_SUFFIX}", document.name));
    let conflict = |held: &str| SinkError::Conflict {
        sink: "file",
        message: format!(
            "{} already holds a document with sha256 {held}, not {}; a delivered document is never replaced: move the old one away if it is wrong",
            target.display(),
            document.sha256
        ),
    };
    // The checksum is written after the document: a checksum means a complete delivery.
    if let Some(held) = recorded_sha256(&checksum)? {
        if held != document.sha256 {
            return Err(conflict(&held));
        }
        let size = std::fs::metadata(&target)
            .map_err(io("inspect", &target))?
            .len();
        write_metadata(&stream_dir, document)?;
        return Ok(Delivered {
            location: target.display().to_string(),
            size,
            already: true,
        });
    }
    let mut size = 0u64;
    let installed = create_whole(&target, |file| {
        let mut hasher = Sha256::new();
        let mut copy = |chunk: &[u8]| -> Result<(), SinkError> {
            hasher.update(chunk);
            size += chunk.len() as u64;
            file.write_all(chunk).map_err(io("write", &target))
        };
        match document.content {
            Content::Bytes(bytes) => copy(bytes)?,
            Content::File(source) => {
                let mut input = std::fs::File::open(source).map_err(io("open", source))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = input.read(&mut buf).map_err(io("read", source))?;
                    if n == 0 {
                        break;
                    }
                    copy(&buf[..n])?;
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != document.sha256 {
            return Err(SinkError::Corrupt {
                sink: "file",
                message: format!(
                    "document {} hashes to {actual} while copied, not {} as recorded: its source changed; nothing was delivered",
                    document.name, document.sha256
                ),
            });
        }
        Ok(())
    })?;
    if !installed {
        // A document without its checksum: an earlier delivery stopped in between. Keep it only
        // if it is the same document.
        let (held, held_size) =
            super::sha256_of(Content::File(&target)).map_err(io("read", &target))?;
        if held != document.sha256 {
            return Err(conflict(&held));
        }
        size = held_size;
    }
    write_metadata(&stream_dir, document)?;
    create_whole(&checksum, |file| {
        file.write_all(super::checksum_line(document).as_bytes())
            .map_err(io("write", &checksum))
    })?;
    std::fs::File::open(&stream_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", &stream_dir))?;
    Ok(Delivered {
        location: target.display().to_string(),
        size,
        already: false,
    })
}

fn write_metadata(stream_dir: &Path, document: &Document<'_>) -> Result<(), SinkError> {
    let Some(metadata) = document.metadata else {
        return Ok(());
    };
    let path = stream_dir.join(format!("{}{METADATA_SUFFIX}", document.name));
    let text = serde_json::to_vec_pretty(metadata).unwrap_or_default();
    create_whole(&path, |file| {
        file.write_all(&text).map_err(io("write", &path))
    })?;
    Ok(())
}

#[async_trait]
impl DocumentSink for FileDocumentSink {
    async fn deliver(&self, document: &Document<'_>) -> Result<Delivered, SinkError> {
        // The document borrows the caller's data; copy what the blocking task needs.
        let dir = self.dir.clone();
        let stream = document.stream.to_string();
        let name = document.name.to_string();
        let media_type = document.media_type.to_string();
        let sha256 = document.sha256.to_string();
        let metadata = document.metadata.cloned();
        let content = match document.content {
            Content::File(path) => Owned::File(path.to_path_buf()),
            Content::Bytes(bytes) => Owned::Bytes(bytes.to_vec()),
        };
        tokio::task::spawn_blocking(move || {
            let document = Document {
                stream: &stream,
                name: &name,
                content: match &content {
                    Owned::File(path) => Content::File(path),
                    Owned::Bytes(bytes) => Content::Bytes(bytes),
                },
                media_type: &media_type,
                sha256: &sha256,
                metadata: metadata.as_ref(),
            };
            deliver_blocking(&dir, &document)
        })
        .await
        .map_err(|error| SinkError::Transient {
            sink: "file",
            message: format!("the delivery task stopped: {error}"),
        })?
    }
}

enum Owned {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document<'a>(name: &'a str, bytes: &'a [u8], sha: &'a str) -> Document<'a> {
        Document {
            stream: "nightly",
            name,
            content: Content::Bytes(bytes),
            media_type: "text/plain",
            sha256: sha,
            metadata: None,
        }
    }

    #[tokio::test]
    async fn a_document_is_delivered_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileDocumentSink::new(&FileDocumentSettings {
            dir: dir.path().to_path_buf(),
        });
        let (sha, _) = super::super::sha256_of(Content::Bytes(b"first")).unwrap();
        let first = sink
            .deliver(&document("a.txt", b"first", &sha))
            .await
            .unwrap();
        assert!(!first.already);
        assert_eq!(
            std::fs::read(dir.path().join("nightly/a.txt")).unwrap(),
            b"first"
        );
        let checksum = std::fs::read_to_string(dir.path().join("nightly/a.txt.sha256")).unwrap();
        assert_eq!(checksum, format!("{sha}  a.txt\n"));
        // Again: found, nothing written.
        let again = sink
            .deliver(&document("a.txt", b"first", &sha))
            .await
            .unwrap();
        assert!(again.already);
        // Other bytes under the same name: refused, the first stays.
        let (other, _) = super::super::sha256_of(Content::Bytes(b"second")).unwrap();
        let error = sink
            .deliver(&document("a.txt", b"second", &other))
            .await
            .unwrap_err();
        assert!(matches!(error, SinkError::Conflict { .. }), "{error}");
        assert_eq!(
            std::fs::read(dir.path().join("nightly/a.txt")).unwrap(),
            b"first"
        );
        // Bytes that do not match their recorded hash are not delivered.
        let error = sink
            .deliver(&document("b.txt", b"changed", &sha))
            .await
            .unwrap_err();
        assert!(matches!(error, SinkError::Corrupt { .. }), "{error}");
        assert!(!dir.path().join("nightly/b.txt").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("nightly"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_delivery_cut_before_its_checksum_is_completed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileDocumentSink::new(&FileDocumentSettings {
            dir: dir.path().to_path_buf(),
        });
        let (sha, _) = super::super::sha256_of(Content::Bytes(b"whole")).unwrap();
        // A crash after the document was installed, before its checksum.
        std::fs::create_dir_all(dir.path().join("nightly")).unwrap();
        std::fs::write(dir.path().join("nightly/c.txt"), b"whole").unwrap();
        let delivered = sink
            .deliver(&document("c.txt", b"whole", &sha))
            .await
            .unwrap();
        assert!(!delivered.already);
        assert!(dir.path().join("nightly/c.txt.sha256").exists());
        // A different leftover under the name is a conflict, not overwritten.
        std::fs::write(dir.path().join("nightly/d.txt"), b"partial").unwrap();
        let error = sink
            .deliver(&document("d.txt", b"whole", &sha))
            .await
            .unwrap_err();
        assert!(matches!(error, SinkError::Conflict { .. }), "{error}");
        assert_eq!(
            std::fs::read(dir.path().join("nightly/d.txt")).unwrap(),
            b"partial"
        );
    }

    #[tokio::test]
    async fn names_that_leave_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileDocumentSink::new(&FileDocumentSettings {
            dir: dir.path().to_path_buf(),
        });
        for name in ["../x", ".hidden", "a/b", ""] {
            let error = sink.deliver(&document(name, b"x", "00")).await.unwrap_err();
            assert!(
                matches!(error, SinkError::Config { .. }),
                "{name:?}: {error}"
            );
        }
    }
}
