//! The manifest chain: one JSON line per sealed segment, each naming its file's SHA-256 and the
//! hash of the previous entry, so an auditor can prove that no segment was removed, edited or
//! reordered after it was written.
//!
//! The chain is computed independently of where entries and segments are stored: the file sink
//! keeps `manifest.jsonl` beside its segments, the S3 sink can keep it as an object, the HTTP
//! sink in its state directory. Every sink uses [`ManifestEntry::chain`] to append and
//! [`verify_chain`] / [`verify_segment`] to check, so `asana-worker verify` speaks for all.
//!
//! An entry's `hash` is `sha256(prev_hash || "\n" || canonical JSON of the entry without hash)`,
//! hex-encoded; the first entry's `prev_hash` is [`GENESIS`]. The canonical JSON is serde's
//! serialization of [`EntryBody`], whose fields serialize in declaration order.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RecordMark;

/// Name of the manifest file (JSON Lines) in a stream's directory.
pub const MANIFEST_FILE: &str = "manifest.jsonl";

/// `prev_hash` of the first entry of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the entry format, stored in every entry.
pub const FORMAT_VERSION: u32 = 1;

/// What an entry says about its segment, hashed as is (field order is the canonical order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryBody {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The stream (the job's name).
    pub stream: String,
    /// Position of the segment in the stream, from 1, without gaps: a removed entry shows.
    pub index: u64,
    /// The segment's file or object name, relative to the manifest.
    pub file: String,
    /// Records in the segment.
    pub count: u64,
    /// Size of the segment as stored (after compression), in bytes.
    pub bytes: u64,
    /// SHA-256 of the stored segment bytes, hex.
    pub sha256: String,
    /// First record (source order).
    pub first: RecordMark,
    /// Last record (source order).
    pub last: RecordMark,
    /// Sequence of the first batch in the segment.
    pub first_sequence: u64,
    /// Sequence of the last batch in the segment: what [`super::RecordSink::recover`] returns.
    pub last_sequence: u64,
    /// The job's cursor after the last batch in the segment.
    pub cursor: serde_json::Value,
    /// When the segment was sealed (job clock, RFC 3339).
    pub sealed_at: String,
    /// The previous entry's `hash`, or [`GENESIS`].
    pub prev_hash: String,
}

/// One line of a manifest: the body and its chained hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// What the entry says.
    #[serde(flatten)]
    pub body: EntryBody,
    /// `sha256(prev_hash || "\n" || canonical body)`, hex.
    pub hash: String,
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hash a body must carry.
pub fn entry_hash(body: &EntryBody) -> String {
    // Serializing a struct of strings, numbers and a JSON value cannot fail.
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(body.prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(&canonical);
    hex::encode(hasher.finalize())
}

impl ManifestEntry {
    /// Seals `body` after `previous` (None for the first entry): sets `index`, `prev_hash` and
    /// the hash, so callers cannot get the chaining wrong.
    pub fn chain(mut body: EntryBody, previous: Option<&ManifestEntry>) -> ManifestEntry {
        body.index = previous.map_or(1, |p| p.body.index + 1);
        body.prev_hash = previous.map_or_else(|| GENESIS.to_string(), |p| p.hash.clone());
        let hash = entry_hash(&body);
        ManifestEntry { body, hash }
    }

    /// The entry as one manifest line, with a trailing newline.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A problem found in a manifest or its segments; the `Display` text is what `verify` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    /// A line is not a manifest entry.
    #[error(
        "manifest line {line}: not a manifest entry ({reason}); the manifest was edited or truncated"
    )]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        reason: String,
    },
    /// An entry's hash does not match its content.
    #[error(
        "manifest line {line} (segment {index}, {file}): the entry's hash does not match its content; the manifest line was edited"
    )]
    EntryEdited {
        /// Line number.
        line: usize,
        /// Segment index.
        index: u64,
        /// Segment file.
        file: String,
    },
    /// An entry does not point at the previous entry's hash.
    #[error(
        "manifest line {line} (segment {index}, {file}): prev_hash does not match the previous entry; an entry before it was removed, edited or reordered"
    )]
    BrokenLink {
        /// Line number.
        line: usize,
        /// Segment index.
        index: u64,
        /// Segment file.
        file: String,
    },
    /// Index not one more than the previous.
    #[error(
        "manifest line {line}: segment index {found} where {expected} was expected; an entry was removed or inserted"
    )]
    IndexGap {
        /// Line number.
        line: usize,
        /// Index found.
        found: u64,
        /// Index expected.
        expected: u64,
    },
    /// Sequences overlap or go backwards between entries.
    #[error(
        "manifest line {line} (segment {index}): batch sequences {first}..={last} do not follow the previous segment's {previous}"
    )]
    SequenceOrder {
        /// Line number.
        line: usize,
        /// Segment index.
        index: u64,
        /// First sequence.
        first: u64,
        /// Last sequence.
        last: u64,
        /// The previous entry's last sequence.
        previous: u64,
    },
    /// The first entry does not hold the stream's first batch: the stream starts late (a sink
    /// that joined after other batches went elsewhere, or lost its beginning).
    #[error(
        "manifest line {line} (segment {index}): the stream starts at batch {first}, not 1; batches 1 to {missing_through} are not in this sink"
    )]
    StartsLate {
        /// Line number.
        line: usize,
        /// Segment index.
        index: u64,
        /// The first sequence it holds.
        first: u64,
        /// The last missing sequence.
        missing_through: u64,
    },
    /// Batches are missing between two entries.
    #[error(
        "manifest line {line} (segment {index}): batches {from}..={to} are missing between this segment and the previous one"
    )]
    SequenceGap {
        /// Line number.
        line: usize,
        /// Segment index.
        index: u64,
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
    /// The segment named by an entry is missing.
    #[error("segment {index} ({file}) is missing; it was removed after being sealed")]
    MissingSegment {
        /// Segment index.
        index: u64,
        /// Segment file.
        file: String,
    },
    /// A segment's bytes differ from what the manifest recorded.
    #[error(
        "segment {index} ({file}): sha256 is {actual}, the manifest recorded {expected}; the file was edited"
    )]
    SegmentEdited {
        /// Segment index.
        index: u64,
        /// Segment file.
        file: String,
        /// Recorded.
        expected: String,
        /// Found.
        actual: String,
    },
    /// A segment's records differ in number from what the manifest recorded.
    #[error("segment {index} ({file}): holds {actual} records, the manifest recorded {expected}")]
    CountMismatch {
        /// Segment index.
        index: u64,
        /// Segment file.
        file: String,
        /// Recorded.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// A sealed segment file that no entry names.
    #[error("segment file {file} is not in the manifest; it was added or its entry was removed")]
    UnlistedSegment {
        /// Segment file.
        file: String,
    },
}

/// Parses manifest text into entries; malformed lines are problems, not errors, so `verify`
/// can report every problem at once. An empty last line (the trailing newline) is fine.
pub fn parse_manifest(text: &str) -> (Vec<(usize, ManifestEntry)>, Vec<ChainProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ManifestEntry>(line) {
            Ok(entry) => entries.push((i + 1, entry)),
            Err(error) => problems.push(ChainProblem::Malformed {
                line: i + 1,
                reason: error.to_string(),
            }),
        }
    }
    (entries, problems)
}

/// Checks the chain of parsed entries (with their line numbers): every hash, every link, every
/// index, and that batch sequences start at 1 and follow each other without a gap or overlap. Returns every problem found.
pub fn verify_chain(entries: &[(usize, ManifestEntry)]) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let mut previous: Option<&ManifestEntry> = None;
    for (line, entry) in entries {
        let body = &entry.body;
        if entry_hash(body) != entry.hash {
            problems.push(ChainProblem::EntryEdited {
                line: *line,
                index: body.index,
                file: body.file.clone(),
            });
        }
        let expected_prev = previous.map_or(GENESIS, |p| p.hash.as_str());
        if body.prev_hash != expected_prev {
            problems.push(ChainProblem::BrokenLink {
                line: *line,
                index: body.index,
                file: body.file.clone(),
            });
        }
        let expected_index = previous.map_or(1, |p| p.body.index + 1);
        if body.index != expected_index {
            problems.push(ChainProblem::IndexGap {
                line: *line,
                found: body.index,
                expected: expected_index,
            });
        }
        if previous.is_none() && body.first_sequence > 1 {
            problems.push(ChainProblem::StartsLate {
                line: *line,
                index: body.index,
                first: body.first_sequence,
                missing_through: body.first_sequence - 1,
            });
        }
        if let Some(p) = previous
            && body.first_sequence > p.body.last_sequence + 1
            && body.last_sequence >= body.first_sequence
        {
            problems.push(ChainProblem::SequenceGap {
                line: *line,
                index: body.index,
                from: p.body.last_sequence + 1,
                to: body.first_sequence - 1,
            });
        }
        if let Some(p) = previous
            && (body.first_sequence <= p.body.last_sequence
                || body.last_sequence < body.first_sequence)
        {
            problems.push(ChainProblem::SequenceOrder {
                line: *line,
                index: body.index,
                first: body.first_sequence,
                last: body.last_sequence,
                previous: p.body.last_sequence,
            });
        }
        previous = Some(entry);
    }
    problems
}

/// Checks one segment's stored bytes against its entry: the SHA-256, and the number of records
/// (lines of the decompressed content when `gzip`).
pub fn verify_segment(entry: &ManifestEntry, stored: Option<&[u8]>) -> Vec<ChainProblem> {
    let body = &entry.body;
    let Some(stored) = stored else {
        return vec![ChainProblem::MissingSegment {
            index: body.index,
            file: body.file.clone(),
        }];
    };
    let actual = sha256_hex(stored);
    if actual != body.sha256 {
        return vec![ChainProblem::SegmentEdited {
            index: body.index,
            file: body.file.clone(),
            expected: body.sha256.clone(),
            actual,
        }];
    }
    let count = if body.file.ends_with(".gz") {
        let mut text = Vec::new();
        let mut decoder = flate2::read::MultiGzDecoder::new(stored);
        if std::io::Read::read_to_end(&mut decoder, &mut text).is_err() {
            return vec![ChainProblem::CountMismatch {
                index: body.index,
                file: body.file.clone(),
                expected: body.count,
                actual: 0,
            }];
        }
        count_lines(&text)
    } else {
        count_lines(stored)
    };
    if count != body.count {
        return vec![ChainProblem::CountMismatch {
            index: body.index,
            file: body.file.clone(),
            expected: body.count,
            actual: count,
        }];
    }
    Vec::new()
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(file: &str, first_sequence: u64, last_sequence: u64, content: &[u8]) -> EntryBody {
        EntryBody {
            version: FORMAT_VERSION,
            stream: "audit".into(),
            index: 0,
            file: file.into(),
            count: count_lines(content),
            bytes: content.len() as u64,
            sha256: sha256_hex(content),
            first: RecordMark {
                gid: "1".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            last: RecordMark {
                gid: "2".into(),
                created_at: "2026-01-01T00:00:01Z".into(),
            },
            first_sequence,
            last_sequence,
            cursor: serde_json::json!({"offset": "x"}),
            sealed_at: "2026-01-01T00:01:00Z".into(),
            prev_hash: String::new(),
        }
    }

    fn chain() -> Vec<(usize, ManifestEntry)> {
        let a = ManifestEntry::chain(body("a.jsonl", 1, 3, b"{}\n{}\n"), None);
        let b = ManifestEntry::chain(body("b.jsonl", 4, 4, b"{}\n"), Some(&a));
        let c = ManifestEntry::chain(body("c.jsonl", 5, 9, b"{}\n"), Some(&b));
        let text = [a, b, c]
            .iter()
            .map(ManifestEntry::to_line)
            .collect::<String>();
        let (entries, problems) = parse_manifest(&text);
        assert!(problems.is_empty());
        entries
    }

    #[test]
    fn an_intact_chain_verifies_and_round_trips() {
        let entries = chain();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].1.body.prev_hash, GENESIS);
        assert_eq!(entries[2].1.body.index, 3);
        assert_eq!(verify_chain(&entries), Vec::new());
        assert!(verify_segment(&entries[0].1, Some(b"{}\n{}\n")).is_empty());
    }

    #[test]
    fn an_edited_entry_is_detected() {
        let mut entries = chain();
        entries[1].1.body.count = 7;
        let problems = verify_chain(&entries);
        assert_eq!(
            problems,
            vec![ChainProblem::EntryEdited {
                line: 2,
                index: 2,
                file: "b.jsonl".into()
            }]
        );
        // Recomputing the edited entry's hash breaks the next link instead.
        entries[1].1.hash = entry_hash(&entries[1].1.body);
        let problems = verify_chain(&entries);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("manifest line 3 (segment 3, c.jsonl): prev_hash does not match"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_removed_entry_is_detected() {
        let mut entries = chain();
        entries.remove(1);
        let text: Vec<String> = verify_chain(&entries)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(text[0].contains("prev_hash does not match"));
        assert!(text[1].contains("segment index 3 where 2 was expected"));
        assert!(text[2].contains("batches 4..=4 are missing"), "{}", text[2]);
    }

    #[test]
    fn a_stream_that_starts_late_is_reported() {
        // A sink that joined the stream at batch 28, as a replica's own directory would.
        let a = ManifestEntry::chain(body("a.jsonl", 28, 30, b"{}\n"), None);
        let b = ManifestEntry::chain(body("b.jsonl", 31, 31, b"{}\n"), Some(&a));
        let text: String = [a, b].iter().map(ManifestEntry::to_line).collect();
        let (entries, problems) = parse_manifest(&text);
        assert!(problems.is_empty());
        let problems = verify_chain(&entries);
        assert_eq!(
            problems,
            vec![ChainProblem::StartsLate {
                line: 1,
                index: 1,
                first: 28,
                missing_through: 27
            }]
        );
        assert!(
            problems[0]
                .to_string()
                .contains("starts at batch 28, not 1")
        );
    }

    #[test]
    fn segments_are_checked_against_their_entry() {
        let entries = chain();
        let entry = &entries[0].1;
        assert_eq!(
            verify_segment(entry, None)[0].to_string(),
            "segment 1 (a.jsonl) is missing; it was removed after being sealed"
        );
        let problems = verify_segment(entry, Some(b"{}\n{\"x\":1}\n"));
        assert!(matches!(problems[0], ChainProblem::SegmentEdited { .. }));
        assert!(problems[0].to_string().ends_with("the file was edited"));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let entries = chain();
        let mut text: String = entries.iter().map(|(_, e)| e.to_line()).collect();
        text.push_str("{not json\n");
        let (parsed, problems) = parse_manifest(&text);
        assert_eq!(parsed.len(), 3);
        assert!(matches!(
            problems[0],
            ChainProblem::Malformed { line: 4, .. }
        ));
    }
}
