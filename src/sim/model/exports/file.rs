//! The file of a finished export, written from a snapshot of the world: gzipped JSON for
//! organization and graph exports, gzipped JSON Lines for resource exports, padded on request to a
//! target size. Deterministic: the same world and padding give the same bytes.
//!
//! Part of the model layer: imports [`super`] (what an export contains), the world and `wire`
//! (rendering).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Export, ExportContent, ExportFile, ResourceParameter};
use crate::sim::model::world::render::render;
use crate::sim::model::world::{Task, World};
use crate::sim::wire::{Detail, FieldTree};

/// A writer that hashes and counts what it writes to the file.
struct HashingFile {
    file: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the file of `export` from `world` at `path`. Deterministic: the same world and padding
/// give the same bytes (gzip header without time or name, objects in world order, sorted keys).
pub fn write_export(world: &World, export: &Export, path: &Path) -> std::io::Result<ExportFile> {
    let sink = HashingFile {
        file: BufWriter::new(File::create(path)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    // Fast compression: a padded export of a GiB is built in seconds rather than a minute, and
    // the padding (random base64) compresses about as well either way.
    let mut out = GzEncoder::new(sink, Compression::fast());
    match &export.content {
        ExportContent::Organization => write_organization(world, &mut out, export.padding_bytes)?,
        ExportContent::Graph { parent } => {
            write_graph(world, parent, &mut out, export.padding_bytes)?
        }
        ExportContent::Resource { parameters } => {
            write_resources(world, parameters, &mut out, export.padding_bytes)?
        }
    }
    let mut sink = out.finish()?;
    sink.flush()?;
    sink.file.get_ref().sync_all()?;
    Ok(ExportFile {
        path: path.to_path_buf(),
        sha256: hex::encode(sink.hasher.finalize()),
        bytes: sink.bytes,
    })
}

fn full(world: &World, gid: &str) -> Value {
    render(world, gid, None, Detail::Full).unwrap_or_else(|| json!({ "gid": gid }))
}

fn write_value(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)
}

/// Writes `,"key":[items…]`.
fn write_array<'a>(
    out: &mut impl Write,
    key: &str,
    world: &World,
    gids: impl Iterator<Item = &'a str>,
) -> std::io::Result<()> {
    write!(out, ",\"{key}\":[")?;
    for (i, gid) in gids.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_value(out, &full(world, gid))?;
    }
    out.write_all(b"]")
}

/// Writes `,"padding":[…]` until about `target` compressed bytes have reached the file. The
/// chunks are base64 of seeded random bytes, so they do not compress away and the same target
/// always gives the same bytes.
fn write_padding(out: &mut GzEncoder<HashingFile>, target: u64) -> std::io::Result<()> {
    out.write_all(b",\"padding\":[")?;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_9add);
    let mut raw = [0u8; 3072];
    let mut first = true;
    while out.get_ref().bytes < target {
        rng.fill(&mut raw[..]);
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        out.write_all(b"\"")?;
        out.write_all(STANDARD.encode(raw).as_bytes())?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"]")
}

fn write_organization(
    world: &World,
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    out.write_all(b"{\"export_format\":\"asana-sim-organization-export-v1\",\"workspace\":")?;
    write_value(out, &full(world, &world.workspace.gid))?;
    write_array(
        out,
        "users",
        world,
        world.users.iter().map(|u| u.gid.as_str()),
    )?;
    write_array(
        out,
        "teams",
        world,
        world.teams.iter().map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "projects",
        world,
        world.projects.iter().map(|p| p.gid.as_str()),
    )?;
    write_array(
        out,
        "sections",
        world,
        world.sections.iter().map(|s| s.gid.as_str()),
    )?;
    write_array(
        out,
        "tasks",
        world,
        world
            .tasks
            .iter()
            .filter(|t| !t.deleted)
            .map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "stories",
        world,
        world.stories.iter().map(|s| s.gid.as_str()),
    )?;
    write_array(
        out,
        "tags",
        world,
        world.tags.iter().map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "custom_fields",
        world,
        world.custom_fields.iter().map(|f| f.gid.as_str()),
    )?;
    write_array(
        out,
        "status_updates",
        world,
        world.status_updates.iter().map(|s| s.gid.as_str()),
    )?;
    if padding > 0 {
        write_padding(out, padding)?;
    }
    out.write_all(b"}\n")
}

/// Tasks of `projects` and all their subtasks, in world order.
fn tasks_below<'a>(world: &'a World, projects: &[&str]) -> Vec<&'a str> {
    let mut included: std::collections::HashSet<&str> = world
        .tasks
        .iter()
        .filter(|t| {
            !t.deleted
                && t.memberships
                    .iter()
                    .any(|(p, _)| projects.contains(&p.as_str()))
        })
        .map(|t| t.gid.as_str())
        .collect();
    loop {
        let before = included.len();
        for task in world.tasks.iter() {
            if !task.deleted
                && let Some(parent) = &task.parent
                && included.contains(parent.as_str())
            {
                included.insert(task.gid.as_str());
            }
        }
        if included.len() == before {
            break;
        }
    }
    world
        .tasks
        .iter()
        .filter(|t| included.contains(t.gid.as_str()))
        .map(|t| t.gid.as_str())
        .collect()
}

fn write_graph(
    world: &World,
    parent: &str,
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    let projects: Vec<&str> = world
        .projects
        .iter()
        .filter(|p| p.gid == parent || p.team == parent)
        .map(|p| p.gid.as_str())
        .collect();
    let tasks = tasks_below(world, &projects);
    out.write_all(b"{\"export_format\":\"asana-sim-graph-export-v1\",\"parent\":")?;
    write_value(out, &full(world, parent))?;
    write_array(out, "projects", world, projects.iter().copied())?;
    write_array(
        out,
        "sections",
        world,
        world
            .sections
            .iter()
            .filter(|s| projects.contains(&s.project.as_str()))
            .map(|s| s.gid.as_str()),
    )?;
    write_array(out, "tasks", world, tasks.iter().copied())?;
    write_array(
        out,
        "stories",
        world,
        world
            .stories
            .iter()
            .filter(|s| tasks.contains(&s.target.as_str()))
            .map(|s| s.gid.as_str()),
    )?;
    if padding > 0 {
        write_padding(out, padding)?;
    }
    out.write_all(b"}\n")
}

fn any_filter(filters: &Map<String, Value>, key: &str, candidates: &[&str]) -> bool {
    match filters.get(key).and_then(Value::as_array) {
        None => true,
        Some(wanted) => wanted
            .iter()
            .filter_map(Value::as_str)
            .any(|w| candidates.contains(&w)),
    }
}

fn time_filter(filters: &Map<String, Value>, field: &str, value: DateTime<Utc>) -> bool {
    let bound = |suffix: &str| {
        filters
            .get(&format!("{field}.{suffix}"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    bound("after").is_none_or(|t| value > t) && bound("before").is_none_or(|t| value < t)
}

fn task_matches(world: &World, task: &Task, filters: &Map<String, Value>) -> bool {
    let commenters: Vec<&str> = world
        .stories
        .iter()
        .filter(|s| s.target == task.gid && s.resource_subtype == "comment_added")
        .map(|s| s.created_by.as_str())
        .collect();
    let followers: Vec<&str> = task.followers.iter().map(String::as_str).collect();
    // The world does not record who assigned or liked a task: those filters match nothing.
    any_filter(filters, "assignee.any", task.assignee.as_deref().as_slice())
        && any_filter(filters, "created_by.any", &[task.created_by.as_str()])
        && any_filter(filters, "followers.any", &followers)
        && any_filter(filters, "commented_on_by.any", &commenters)
        && any_filter(filters, "assigned_by.any", &[])
        && any_filter(filters, "liked_by.any", &[])
        && time_filter(filters, "created_at", task.created_at)
        && time_filter(filters, "modified_at", task.modified_at)
}

fn write_line(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    write_value(out, value)?;
    out.write_all(b"\n")
}

fn write_resources(
    world: &World,
    parameters: &[ResourceParameter],
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    let line_of = |gid: &str, fields: Option<&FieldTree>| {
        render(world, gid, fields, Detail::Full).unwrap_or_else(|| json!({ "gid": gid }))
    };
    for parameter in parameters {
        let fields = parameter.fields.as_ref();
        match parameter.resource_type.as_str() {
            "task" => {
                for task in world.tasks.iter().filter(|t| !t.deleted) {
                    if !task_matches(world, task, &parameter.filters) {
                        continue;
                    }
                    let mut line = line_of(&task.gid, fields);
                    if fields.is_none() {
                        let stories: Vec<Value> = world
                            .stories
                            .within(&task.gid)
                            .map(|s| line_of(&s.gid, None))
                            .collect();
                        line["stories"] = Value::Array(stories);
                        let attachments: Vec<Value> = world
                            .attachments
                            .within(&task.gid)
                            .map(|a| line_of(&a.gid, None))
                            .collect();
                        line["attachments"] = Value::Array(attachments);
                    }
                    write_line(out, &line)?;
                }
            }
            "team" => {
                for team in world.teams.iter() {
                    let mut line = line_of(&team.gid, fields);
                    if fields.is_none() {
                        let members: Vec<Value> = world
                            .team_members(&team.gid)
                            .map(|gid| {
                                render(world, gid, None, Detail::Compact)
                                    .unwrap_or_else(|| json!({ "gid": gid }))
                            })
                            .collect();
                        line["members"] = Value::Array(members);
                    }
                    write_line(out, &line)?;
                }
            }
            _ => {
                for update in world.status_updates.iter() {
                    if !time_filter(&parameter.filters, "created_at", update.created_at)
                        || !time_filter(&parameter.filters, "modified_at", update.created_at)
                        || !any_filter(
                            &parameter.filters,
                            "created_by.any",
                            &[update.author.as_str()],
                        )
                    {
                        continue;
                    }
                    let mut line = line_of(&update.gid, fields);
                    line["resource_type"] = json!("message");
                    line["resource_subtype"] = json!("status_update");
                    if fields.is_none() {
                        line["parents"] = json!([{
                            "gid": update.parent,
                            "resource_type": world.kind_of(&update.parent),
                        }]);
                    }
                    write_line(out, &line)?;
                }
            }
        }
    }
    if padding > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_9add);
        let mut raw = [0u8; 3072];
        while out.get_ref().bytes < padding {
            rng.fill(&mut raw[..]);
            write_line(
                out,
                &json!({ "resource_type": "padding", "data": STANDARD.encode(raw) }),
            )?;
        }
    }
    Ok(())
}
