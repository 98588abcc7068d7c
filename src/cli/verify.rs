//! `asana-worker verify`: checks a file sink's manifest chain and segments, so an auditor can
//! prove that no segment was removed, edited or reordered. Exit 0 when intact, 1 listing every
//! problem (one line each) otherwise.
//!
//! `--dir DIR` names a stream directory (holding `manifest.jsonl`) or a sink directory (each of
//! its subdirectories with a manifest is verified); `--job NAME` reads the job's file sink
//! directory from its job file, or checks the manifest of its `s3` sink (in the bucket, every
//! object included) or `http` sink (the local delivery manifest).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::common::{ConfigArgs, UsageError};
use crate::jobs::Kind;
use crate::sinks::RecordSinkSettings as SinkSettings;
use crate::sinks::file::verify_stream_dir;
use crate::sinks::manifest::MANIFEST_FILE;

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A stream directory (with manifest.jsonl) or a file sink's directory.
    #[arg(long, conflicts_with = "job")]
    pub dir: Option<PathBuf>,
    /// An audit_log job whose file sink is verified (read from its job file).
    #[arg(long)]
    pub job: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Verifies.
pub async fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let (dir, only) = match (&args.dir, &args.job) {
        (Some(dir), _) => (dir.clone(), None),
        (None, Some(job)) => {
            let settings = args
                .config
                .load()
                .map_err(|e| UsageError(format!("{e:#}")))?;
            let jobs = crate::daemon::load_job_definitions(
                &settings,
                &super::creds::stored_names(&settings).await,
            )
            .map_err(|problems| UsageError(format!("the job files are invalid:\n{problems}")))?;
            let Some(spec) = jobs.iter().find(|j| &j.name == job) else {
                return Err(UsageError(format!(
                    "no job named {job:?} in {}",
                    settings.jobs.dir.display()
                ))
                .into());
            };
            let Kind::AuditLog(kind) = &spec.kind else {
                return Err(UsageError(format!(
                    "job {job:?} is a {} job; verify checks audit_log jobs with a file sink",
                    spec.kind.name()
                ))
                .into());
            };
            match &kind.sink {
                SinkSettings::File(file) => (file.dir.clone(), Some(job.clone())),
                remote => return verify_remote(remote, job, &settings).await,
            }
        }
        (None, None) => {
            return Err(UsageError("give --dir DIR or --job NAME".into()).into());
        }
    };
    let streams = stream_dirs(&dir, only.as_deref())?;
    let mut failed = false;
    for stream in streams {
        let report = verify_stream_dir(&stream)
            .with_context(|| format!("verifying {}", stream.display()))?;
        if report.problems.is_empty() {
            println!(
                "OK {}: {} sealed segment(s), {} record(s), chain intact{}",
                stream.display(),
                report.segments,
                report.records,
                if report.open_records > 0 {
                    format!(
                        "; {} record(s) committed in the open segment",
                        report.open_records
                    )
                } else {
                    String::new()
                }
            );
        } else {
            failed = true;
            println!(
                "FAILED {}: {} problem(s)",
                stream.display(),
                report.problems.len()
            );
            for problem in &report.problems {
                println!("  {problem}");
            }
        }
    }
    Ok(if failed {
        super::EXIT_FAILURE
    } else {
        super::EXIT_OK
    })
}

/// The stream directories under `dir`: itself when it holds a manifest or an open segment,
/// else its subdirectories that do.
fn stream_dirs(dir: &Path, only: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let is_stream = |d: &Path| {
        d.join(MANIFEST_FILE).exists() || d.join(crate::sinks::file::OPEN_JOURNAL).exists()
    };
    if let Some(stream) = only {
        let path = dir.join(stream);
        if !is_stream(&path) {
            bail!(
                "{} holds no manifest yet: the job has not committed anything",
                path.display()
            );
        }
        return Ok(vec![path]);
    }
    if is_stream(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    let read = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut streams: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_stream(p))
        .collect();
    streams.sort();
    if streams.is_empty() {
        bail!(
            "{} holds no {MANIFEST_FILE} (nor does any directory in it); point --dir at a file sink's directory",
            dir.display()
        );
    }
    Ok(streams)
}

/// Verifies the manifest an `s3` sink keeps in its bucket (entries, chain, every object) or an
/// `http` sink keeps in the state directory (entries and chain: a collector cannot be read back).
async fn verify_remote(
    sink: &SinkSettings,
    job: &str,
    settings: &crate::config::settings::Settings,
) -> anyhow::Result<u8> {
    let (place, result) = match sink {
        SinkSettings::S3(s3) => {
            let sink = crate::sinks::s3::S3Sink::new(s3)?;
            let place = format!("s3 bucket {} ({job})", s3.location.bucket);
            (
                place,
                sink.verify(job).await.map(|r| (r.entries, r.records)),
            )
        }
        SinkSettings::Http(http) => {
            let context = crate::sinks::SinkContext::from_settings(settings);
            let sink = crate::sinks::http::HttpSink::new(http, &context)?;
            let place = sink.manifest_path(job).display().to_string();
            (place, sink.verify(job).map(|r| (r.entries, r.records)))
        }
        SinkSettings::File(_) => bail!("job {job:?} writes to a file sink: verify its directory"),
    };
    match result {
        Ok((entries, records)) => {
            println!("OK {place}: {entries} batch(es), {records} record(s), chain intact");
            Ok(super::EXIT_OK)
        }
        Err(crate::sinks::SinkError::Corrupt { message, .. }) => {
            println!("FAILED {place}: {message}");
            Ok(super::EXIT_FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}
