//! What a digest says, computed from the tasks alone: which task goes in which section of which
//! group, with "today" and "overdue" in the job's time zone. No I/O: the sources collect
//! [`TaskFacts`], [`build`] classifies them, and the result ([`DigestModel`]) is what the
//! templates render and what the job's checkpoint keeps, so a retry delivers the same digest.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::settings::{GroupBy, SectionKind};

/// A person, as tasks name their assignee.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    /// The user's gid.
    pub gid: String,
    /// Their name.
    pub name: String,
    /// Their email, where the token may read it.
    pub email: Option<String>,
}

/// A gid with a name (a section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// The gid.
    pub gid: String,
    /// The name.
    pub name: String,
}

/// Where a task sits: a project, and its section there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The project's gid.
    pub project: String,
    /// Its section in that project, if known.
    pub section: Option<Named>,
}

/// A project of the digest's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// The gid.
    pub gid: String,
    /// The name.
    pub name: String,
    /// Its link in Asana.
    pub url: Option<String>,
}

/// One task, as either source reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFacts {
    /// The gid.
    pub gid: String,
    /// The name.
    pub name: String,
    /// Its link in Asana (`permalink_url`).
    pub url: String,
    /// `default_task`, `milestone` or `approval`.
    pub subtype: String,
    /// An approval's status (`pending`, `approved`, …).
    pub approval_status: Option<String>,
    /// Whether it is complete.
    pub completed: bool,
    /// When it was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last modified.
    pub modified_at: Option<DateTime<Utc>>,
    /// Its due date (a day, no time).
    pub due_on: Option<NaiveDate>,
    /// Its due time, when it has one.
    pub due_at: Option<DateTime<Utc>>,
    /// Its assignee.
    pub assignee: Option<Person>,
    /// Its projects and sections.
    pub placements: Vec<Placement>,
    /// Names of the dependencies it waits on that are not complete.
    pub blocked_by: Vec<String>,
}

/// What a source collected for one digest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// The projects of the scope, in order (none for an assignee scope).
    pub projects: Vec<ProjectInfo>,
    /// The assignees of the scope, in order (none for a project scope).
    pub assignees: Vec<Person>,
    /// The tasks.
    pub tasks: Vec<TaskFacts>,
    /// Until when the data is complete: now for the API, the mirror's last catch-up.
    pub data_as_of: Option<DateTime<Utc>>,
}

/// The time frame and the options of one digest.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The digest's title.
    pub title: String,
    /// The job.
    pub job: String,
    /// The period key.
    pub period: String,
    /// The job's time zone.
    pub timezone: Tz,
    /// The instant the digest describes (its data is read then).
    pub as_of: DateTime<Utc>,
    /// Where `completed` and `created` reach back to (the previous delivered digest).
    pub since: DateTime<Utc>,
    /// `"api"` or `"sync mirror"`.
    pub source: String,
    /// The sections, in order.
    pub sections: Vec<SectionKind>,
    /// The grouping.
    pub group_by: GroupBy,
    /// Days ahead `due_soon` reaches (today included).
    pub due_days: u64,
    /// Seconds without a change that make a task stale.
    pub stale_secs: i64,
    /// Most tasks listed per section of a group.
    pub max_tasks: usize,
}

/// One task as a template shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLine {
    /// The gid.
    pub gid: String,
    /// The name.
    pub name: String,
    /// Its link in Asana.
    pub url: String,
    /// `default_task`, `milestone` or `approval`.
    pub subtype: String,
    /// Its due date (`2026-12-07`) or due time (`2026-12-07 14:00 CET`) in the job's zone.
    pub due: Option<String>,
    /// Whole days past due (overdue tasks).
    pub days_overdue: Option<i64>,
    /// The assignee's name.
    pub assignee: Option<String>,
    /// The project names it is in.
    pub projects: Vec<String>,
    /// Its section (in the group's project, or its first placement).
    pub section: Option<String>,
    /// When it was completed, in the job's zone.
    pub completed_at: Option<String>,
    /// When it was created, in the job's zone.
    pub created_at: Option<String>,
    /// When it was last modified, in the job's zone.
    pub modified_at: Option<String>,
    /// Incomplete dependencies it waits on.
    pub blocked_by: Vec<String>,
}

/// One section of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionOut {
    /// `overdue`, `due_soon`, …
    pub key: String,
    /// Its heading.
    pub title: String,
    /// Tasks in it (listed or not).
    pub count: usize,
    /// Tasks left out of `tasks` by `max_tasks`.
    pub more: usize,
    /// The tasks listed.
    pub tasks: Vec<TaskLine>,
}

/// One group (a project, a section of a project, or an assignee).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Its key: a project's, section's or user's gid, or `unassigned`.
    pub key: String,
    /// `project`, `section` or `assignee`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its link in Asana (projects).
    pub url: Option<String>,
    /// The project it belongs to (a section's group, and a project's own group).
    pub project: Option<String>,
    /// The assignee's email (assignee groups).
    pub email: Option<String>,
    /// Tasks in its sections, counted once per section.
    pub total: usize,
    /// Its sections that hold tasks, in the configured order.
    pub sections: Vec<SectionOut>,
}

/// A section's heading and count over the whole digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionTotal {
    /// `overdue`, `due_soon`, …
    pub key: String,
    /// Its heading.
    pub title: String,
    /// Tasks in it over every group.
    pub count: usize,
}

/// A digest, ready to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestModel {
    /// The title.
    pub title: String,
    /// The job's name.
    pub job: String,
    /// The period key (`2026-12-07T0900+0100`).
    pub period: String,
    /// The job's time zone (IANA name).
    pub timezone: String,
    /// Today in the job's zone.
    pub today: String,
    /// The instant described, in the job's zone.
    pub as_of: String,
    /// The instant described (RFC 3339, UTC), for programs.
    pub as_of_utc: DateTime<Utc>,
    /// Where `completed` and `created` reach back to, in the job's zone.
    pub since: String,
    /// Where `completed` and `created` reach back to (RFC 3339, UTC).
    pub since_utc: DateTime<Utc>,
    /// `api` or `sync mirror`.
    pub source: String,
    /// How fresh the data is: the mirror's last catch-up in the job's zone (mirror only).
    pub data_as_of: Option<String>,
    /// The mirror's age in minutes at `as_of` (mirror only).
    pub data_age_minutes: Option<i64>,
    /// Tasks over every section and group.
    pub total: usize,
    /// Whether no section holds a task.
    pub empty: bool,
    /// The sections over the whole digest, in the configured order.
    pub sections: Vec<SectionTotal>,
    /// The groups that hold tasks.
    pub groups: Vec<Group>,
    /// The recipient, when each assignee receives their own part.
    pub recipient: Option<String>,
}

impl DigestModel {
    /// The same digest restricted to the group `key` (one assignee's email, one project's
    /// status update); section totals are recounted.
    pub fn only_group(&self, key: &str) -> DigestModel {
        let mut part = self.clone();
        part.groups.retain(|group| group.key == key);
        part.recount();
        part.recipient = part.groups.first().map(|group| group.name.clone());
        part
    }

    fn recount(&mut self) {
        for total in &mut self.sections {
            total.count = self
                .groups
                .iter()
                .flat_map(|group| &group.sections)
                .filter(|section| section.key == total.key)
                .map(|section| section.count)
                .sum();
        }
        self.total = self.groups.iter().map(|group| group.total).sum();
        self.empty = self.total == 0;
    }
}

/// The heading of a section.
pub fn section_title(kind: SectionKind, due_days: u64, stale_days: i64) -> String {
    match kind {
        SectionKind::Overdue => "Overdue".into(),
        SectionKind::DueSoon if due_days == 1 => "Due today".into(),
        SectionKind::DueSoon => format!("Due in the next {due_days} days"),
        SectionKind::Completed => "Completed since the last digest".into(),
        SectionKind::Created => "Created since the last digest".into(),
        SectionKind::Unassigned => "Unassigned".into(),
        SectionKind::Blocked => "Blocked by incomplete dependencies".into(),
        SectionKind::Stale => format!("Not updated for {stale_days} days"),
        SectionKind::Milestones => "Milestones due".into(),
        SectionKind::Approvals => "Approvals due".into(),
    }
}

/// Where a task is due, as the job's zone sees it.
struct Due {
    /// The local day.
    day: NaiveDate,
    /// Whether it has passed at `as_of`.
    passed: bool,
}

fn due_of(task: &TaskFacts, tz: Tz, as_of: DateTime<Utc>, today: NaiveDate) -> Option<Due> {
    if let Some(at) = task.due_at {
        return Some(Due {
            day: at.with_timezone(&tz).date_naive(),
            passed: at < as_of,
        });
    }
    task.due_on.map(|day| Due {
        day,
        passed: day < today,
    })
}

fn local_text(tz: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The sections `task` belongs in.
fn sections_of(task: &TaskFacts, frame: &Frame, today: NaiveDate) -> Vec<SectionKind> {
    let tz = frame.timezone;
    let window_end = today
        .checked_add_days(Days::new(frame.due_days))
        .unwrap_or(NaiveDate::MAX);
    let in_window =
        |at: Option<DateTime<Utc>>| at.is_some_and(|at| at >= frame.since && at < frame.as_of);
    // Where the task is due, once for every section.
    let due = due_of(task, tz, frame.as_of, today);
    let overdue = due.as_ref().is_some_and(|due| due.passed);
    let due_soon = due
        .as_ref()
        .is_some_and(|due| !due.passed && due.day < window_end);
    let mut found = Vec::new();
    for kind in &frame.sections {
        let belongs = if task.completed {
            match kind {
                SectionKind::Completed => in_window(task.completed_at),
                SectionKind::Created => in_window(task.created_at),
                _ => false,
            }
        } else {
            match kind {
                SectionKind::Overdue => overdue,
                SectionKind::DueSoon => due_soon,
                SectionKind::Completed => false,
                SectionKind::Created => in_window(task.created_at),
                SectionKind::Unassigned => task.assignee.is_none(),
                SectionKind::Blocked => !task.blocked_by.is_empty(),
                SectionKind::Stale => task.modified_at.is_some_and(|at| {
                    frame.as_of.signed_duration_since(at).num_seconds() >= frame.stale_secs
                }),
                SectionKind::Milestones => task.subtype == "milestone" && (overdue || due_soon),
                SectionKind::Approvals => {
                    task.subtype == "approval"
                        && task.approval_status.as_deref() == Some("pending")
                        && (overdue || due_soon)
                }
            }
        };
        if belongs {
            found.push(*kind);
        }
    }
    found
}

/// The order tasks are listed in within a section.
fn sort_key(kind: SectionKind, task: &TaskFacts) -> (i64, String) {
    let seconds = |at: Option<DateTime<Utc>>| at.map_or(i64::MAX, |at| at.timestamp());
    let due = task
        .due_at
        .map(|at| at.timestamp())
        .or_else(|| {
            task.due_on
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp())
        })
        .unwrap_or(i64::MAX);
    let primary = match kind {
        SectionKind::Completed => -seconds(task.completed_at),
        SectionKind::Created => -seconds(task.created_at),
        SectionKind::Stale => seconds(task.modified_at),
        _ => due,
    };
    (primary, task.name.to_lowercase())
}

/// Classifies the collected tasks into the digest.
pub fn build(collected: &Collected, frame: &Frame) -> DigestModel {
    let tz = frame.timezone;
    let today = frame.as_of.with_timezone(&tz).date_naive();
    let project_names: BTreeMap<&str, &ProjectInfo> = collected
        .projects
        .iter()
        .map(|project| (project.gid.as_str(), project))
        .collect();
    // Each task once, with the sections it belongs in.
    let mut seen = std::collections::BTreeSet::new();
    let classified: Vec<(&TaskFacts, Vec<SectionKind>)> = collected
        .tasks
        .iter()
        .filter(|task| seen.insert(task.gid.as_str()))
        .map(|task| (task, sections_of(task, frame, today)))
        .filter(|(_, sections)| !sections.is_empty())
        .collect();

    // The groups, in order, each with its tasks.
    struct Pending<'t> {
        group: Group,
        tasks: Vec<&'t (&'t TaskFacts, Vec<SectionKind>)>,
    }
    let mut groups: Vec<Pending<'_>> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    fn add<'t>(
        groups: &mut Vec<Pending<'t>>,
        index: &mut BTreeMap<String, usize>,
        group: Group,
    ) -> usize {
        *index.entry(group.key.clone()).or_insert_with(|| {
            groups.push(Pending {
                group,
                tasks: Vec::new(),
            });
            groups.len() - 1
        })
    }
    let empty_group = |key: &str, kind: &str, name: &str| Group {
        key: key.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        url: None,
        project: None,
        email: None,
        total: 0,
        sections: Vec::new(),
    };
    match frame.group_by {
        GroupBy::Project | GroupBy::Section => {
            for project in &collected.projects {
                if frame.group_by == GroupBy::Project {
                    let mut group = empty_group(&project.gid, "project", &project.name);
                    group.url = project.url.clone();
                    group.project = Some(project.name.clone());
                    add(&mut groups, &mut index, group);
                }
            }
            for entry in &classified {
                let (task, _) = entry;
                for placement in &task.placements {
                    let Some(project) = project_names.get(placement.project.as_str()) else {
                        continue;
                    };
                    let at = if frame.group_by == GroupBy::Project {
                        index.get(&project.gid).copied()
                    } else {
                        let (key, name) = match &placement.section {
                            Some(section) => (
                                section.gid.clone(),
                                format!("{} › {}", project.name, section.name),
                            ),
                            None => (format!("{}-none", project.gid), project.name.clone()),
                        };
                        let mut group = empty_group(&key, "section", &name);
                        group.url = project.url.clone();
                        group.project = Some(project.name.clone());
                        Some(add(&mut groups, &mut index, group))
                    };
                    if let Some(at) = at {
                        groups[at].tasks.push(entry);
                    }
                }
            }
            if frame.group_by == GroupBy::Section {
                // Sections grouped by their project, in the scope's order.
                let order: BTreeMap<&str, usize> = collected
                    .projects
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name.as_str(), i))
                    .collect();
                groups.sort_by_key(|pending| {
                    pending
                        .group
                        .project
                        .as_deref()
                        .and_then(|name| order.get(name).copied())
                        .unwrap_or(usize::MAX)
                });
            }
        }
        GroupBy::Assignee => {
            for person in &collected.assignees {
                let mut group = empty_group(&person.gid, "assignee", &person.name);
                group.email = person.email.clone();
                add(&mut groups, &mut index, group);
            }
            let mut people: Vec<&Person> = classified
                .iter()
                .filter_map(|(task, _)| task.assignee.as_ref())
                .collect();
            people.sort_by_key(|person| person.name.to_lowercase());
            for person in people {
                let mut group = empty_group(&person.gid, "assignee", &person.name);
                group.email = person.email.clone();
                add(&mut groups, &mut index, group);
            }
            for entry in &classified {
                let at = match &entry.0.assignee {
                    Some(person) => index.get(&person.gid).copied(),
                    None => Some(add(
                        &mut groups,
                        &mut index,
                        empty_group("unassigned", "assignee", "Unassigned"),
                    )),
                };
                if let Some(at) = at {
                    groups[at].tasks.push(entry);
                }
            }
        }
    }

    let stale_days = frame.stale_secs / 86_400;
    let line = |task: &TaskFacts, group: &Group, kind: SectionKind| {
        let due = task
            .due_at
            .map(|at| local_text(tz, at))
            .or_else(|| task.due_on.map(|d| d.format("%Y-%m-%d").to_string()));
        let days_overdue = (kind == SectionKind::Overdue).then(|| {
            let day = task
                .due_at
                .map(|at| at.with_timezone(&tz).date_naive())
                .or(task.due_on)
                .unwrap_or(today);
            (today - day).num_days()
        });
        let projects: Vec<String> = task
            .placements
            .iter()
            .filter_map(|p| {
                project_names
                    .get(p.project.as_str())
                    .map(|p| p.name.clone())
            })
            .collect();
        let section = task
            .placements
            .iter()
            .find(|p| {
                group.project.is_none()
                    || project_names
                        .get(p.project.as_str())
                        .is_some_and(|info| Some(&info.name) == group.project.as_ref())
            })
            .and_then(|p| p.section.as_ref().map(|s| s.name.clone()));
        TaskLine {
            gid: task.gid.clone(),
            name: task.name.clone(),
            url: task.url.clone(),
            subtype: task.subtype.clone(),
            due,
            days_overdue,
            assignee: task.assignee.as_ref().map(|p| p.name.clone()),
            projects,
            section,
            completed_at: task.completed_at.map(|at| local_text(tz, at)),
            created_at: task.created_at.map(|at| local_text(tz, at)),
            modified_at: task.modified_at.map(|at| local_text(tz, at)),
            blocked_by: task.blocked_by.clone(),
        }
    };
    let mut out_groups = Vec::new();
    for pending in groups {
        let mut group = pending.group;
        for kind in &frame.sections {
            let mut tasks: Vec<&TaskFacts> = pending
                .tasks
                .iter()
                .filter(|(_, sections)| sections.contains(kind))
                .map(|(task, _)| *task)
                .collect();
            if tasks.is_empty() {
                continue;
            }
            tasks.sort_by_key(|task| sort_key(*kind, task));
            let count = tasks.len();
            let lines = tasks
                .iter()
                .take(frame.max_tasks)
                .map(|task| line(task, &group, *kind))
                .collect();
            group.sections.push(SectionOut {
                key: kind.as_str().to_string(),
                title: section_title(*kind, frame.due_days, stale_days),
                count,
                more: count.saturating_sub(frame.max_tasks),
                tasks: lines,
            });
            group.total += count;
        }
        if group.total > 0 {
            out_groups.push(group);
        }
    }
    let mut model = DigestModel {
        title: frame.title.clone(),
        job: frame.job.clone(),
        period: frame.period.clone(),
        timezone: tz.name().to_string(),
        today: today.format("%A %Y-%m-%d").to_string(),
        as_of: local_text(tz, frame.as_of),
        as_of_utc: frame.as_of,
        since: local_text(tz, frame.since),
        since_utc: frame.since,
        source: frame.source.clone(),
        data_as_of: None,
        data_age_minutes: None,
        total: 0,
        empty: true,
        sections: frame
            .sections
            .iter()
            .map(|kind| SectionTotal {
                key: kind.as_str().to_string(),
                title: section_title(*kind, frame.due_days, stale_days),
                count: 0,
            })
            .collect(),
        groups: out_groups,
        recipient: None,
    };
    if frame.source != "api"
        && let Some(at) = collected.data_as_of
    {
        model.data_as_of = Some(local_text(tz, at));
        model.data_age_minutes = Some(frame.as_of.signed_duration_since(at).num_minutes());
    }
    model.recount();
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn task(gid: &str) -> TaskFacts {
        TaskFacts {
            gid: gid.into(),
            name: format!("task {gid}"),
            url: format!("https://app.asana.com/0/0/{gid}"),
            subtype: "default_task".into(),
            approval_status: None,
            completed: false,
            completed_at: None,
            created_at: Some(utc("2026-01-01T00:00:00Z")),
            modified_at: Some(utc("2026-01-01T00:00:00Z")),
            due_on: None,
            due_at: None,
            assignee: Some(Person {
                gid: "9".into(),
                name: "Ada".into(),
                email: Some("ada@example.com".into()),
            }),
            placements: vec![Placement {
                project: "1".into(),
                section: None,
            }],
            blocked_by: vec![],
        }
    }

    fn frame(tz: Tz, as_of: &str) -> Frame {
        Frame {
            title: "t".into(),
            job: "j".into(),
            period: "p".into(),
            timezone: tz,
            as_of: utc(as_of),
            since: utc(as_of) - chrono::Duration::days(7),
            source: "api".into(),
            sections: SectionKind::ALL.to_vec(),
            group_by: GroupBy::Project,
            due_days: 7,
            stale_secs: 14 * 86_400,
            max_tasks: 50,
        }
    }

    fn collected(tasks: Vec<TaskFacts>) -> Collected {
        Collected {
            projects: vec![ProjectInfo {
                gid: "1".into(),
                name: "Launch".into(),
                url: None,
            }],
            tasks,
            ..Collected::default()
        }
    }

    /// Task gids per section key.
    fn placed(model: &DigestModel) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for group in &model.groups {
            for section in &group.sections {
                out.entry(section.key.clone())
                    .or_default()
                    .extend(section.tasks.iter().map(|t| t.gid.clone()));
            }
        }
        out
    }

    #[test]
    fn overdue_and_due_soon_follow_the_jobs_midnight_not_utcs() {
        // 23:30 UTC on Dec 6 is already Dec 7 in Berlin (UTC+1) but still Dec 6 in New York.
        let as_of = "2026-12-06T23:30:00Z";
        let mut due_6th = task("6");
        due_6th.due_on = NaiveDate::from_ymd_opt(2026, 12, 6);
        let mut due_7th = task("7");
        due_7th.due_on = NaiveDate::from_ymd_opt(2026, 12, 7);
        let tasks = vec![due_6th, due_7th];
        let berlin = build(
            &collected(tasks.clone()),
            &frame(chrono_tz::Europe::Berlin, as_of),
        );
        assert_eq!(placed(&berlin)["overdue"], vec!["6"]);
        assert_eq!(placed(&berlin)["due_soon"], vec!["7"]);
        assert!(berlin.today.contains("2026-12-07"), "{}", berlin.today);
        let new_york = build(
            &collected(tasks),
            &frame(chrono_tz::America::New_York, as_of),
        );
        assert!(!placed(&new_york).contains_key("overdue"), "{new_york:?}");
        assert_eq!(placed(&new_york)["due_soon"], vec!["6", "7"]);
    }

    #[test]
    fn a_due_time_is_overdue_to_the_minute_and_shown_in_the_jobs_zone() {
        let mut passed = task("1");
        passed.due_at = Some(utc("2026-12-07T08:59:00Z"));
        let mut later = task("2");
        later.due_at = Some(utc("2026-12-07T09:01:00Z"));
        let model = build(
            &collected(vec![passed, later]),
            &frame(chrono_tz::Europe::Berlin, "2026-12-07T09:00:00Z"),
        );
        assert_eq!(placed(&model)["overdue"], vec!["1"]);
        assert_eq!(placed(&model)["due_soon"], vec!["2"]);
        let line = &model.groups[0].sections[0].tasks[0];
        assert_eq!(line.due.as_deref(), Some("2026-12-07 09:59 CET"));
        assert_eq!(line.days_overdue, Some(0));
    }

    #[test]
    fn the_due_window_ends_at_local_midnight_across_a_dst_change() {
        // Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours. A one-day
        // window on the 25th holds what is due on the 25th, not on the 26th.
        let mut frame = frame(chrono_tz::Europe::Berlin, "2026-10-25T22:30:00Z");
        frame.due_days = 1;
        let mut on_25th = task("25");
        // 23:59 local on the 25th is 22:59 UTC (UTC+1 after the change).
        on_25th.due_at = Some(utc("2026-10-25T22:59:00Z"));
        let mut on_26th = task("26");
        on_26th.due_at = Some(utc("2026-10-25T23:00:00Z"));
        let model = build(&collected(vec![on_25th, on_26th]), &frame);
        assert_eq!(placed(&model)["due_soon"], vec!["25"], "{model:?}");
        // The spring change (2026-03-29, 23 hours): 23:30 UTC on the 28th is 00:30 on the 29th.
        let frame = super::tests::frame(chrono_tz::Europe::Berlin, "2026-03-28T23:30:00Z");
        let mut due_28th = task("28");
        due_28th.due_on = NaiveDate::from_ymd_opt(2026, 3, 28);
        let model = build(&collected(vec![due_28th]), &frame);
        assert_eq!(placed(&model)["overdue"], vec!["28"]);
        assert_eq!(model.groups[0].sections[0].tasks[0].days_overdue, Some(1));
    }

    #[test]
    fn completed_and_created_count_only_since_the_previous_digest() {
        let frame = frame(chrono_tz::UTC, "2026-12-07T09:00:00Z");
        let mut done_before = task("1");
        done_before.completed = true;
        done_before.completed_at = Some(frame.since - chrono::Duration::seconds(1));
        let mut done_at_since = task("2");
        done_at_since.completed = true;
        done_at_since.completed_at = Some(frame.since);
        let mut done_after_as_of = task("3");
        done_after_as_of.completed = true;
        done_after_as_of.completed_at = Some(frame.as_of);
        let mut created = task("4");
        created.created_at = Some(frame.as_of - chrono::Duration::hours(1));
        let model = build(
            &collected(vec![done_before, done_at_since, done_after_as_of, created]),
            &frame,
        );
        let placed = placed(&model);
        assert_eq!(placed["completed"], vec!["2"]);
        assert_eq!(placed["created"], vec!["4"]);
    }

    #[test]
    fn unassigned_blocked_stale_milestones_and_approvals() {
        let frame = frame(chrono_tz::UTC, "2026-12-07T09:00:00Z");
        let mut nobody = task("1");
        nobody.assignee = None;
        let mut blocked = task("2");
        blocked.blocked_by = vec!["task 9".into()];
        let mut stale = task("3");
        stale.modified_at = Some(frame.as_of - chrono::Duration::days(15));
        let mut fresh = task("4");
        fresh.modified_at = Some(frame.as_of - chrono::Duration::days(1));
        let mut milestone = task("5");
        milestone.subtype = "milestone".into();
        milestone.due_on = NaiveDate::from_ymd_opt(2026, 12, 9);
        let mut far_milestone = task("6");
        far_milestone.subtype = "milestone".into();
        far_milestone.due_on = NaiveDate::from_ymd_opt(2027, 1, 9);
        let mut approval = task("7");
        approval.subtype = "approval".into();
        approval.approval_status = Some("pending".into());
        approval.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
        let mut approved = task("8");
        approved.subtype = "approval".into();
        approved.approval_status = Some("approved".into());
        approved.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
        let model = build(
            &collected(vec![
                nobody,
                blocked,
                stale,
                fresh,
                milestone,
                far_milestone,
                approval,
                approved,
            ]),
            &frame,
        );
        let placed = placed(&model);
        assert_eq!(placed["unassigned"], vec!["1"]);
        assert_eq!(placed["blocked"], vec!["2"]);
        assert!(placed["stale"].contains(&"3".to_string()));
        assert!(!placed["stale"].contains(&"4".to_string()));
        assert_eq!(placed["milestones"], vec!["5"]);
        assert_eq!(placed["approvals"], vec!["7"]);
        assert_eq!(placed["overdue"], vec!["7", "8"]);
    }

    #[test]
    fn grouping_by_assignee_gives_each_person_their_part() {
        let mut frame = frame(chrono_tz::UTC, "2026-12-07T09:00:00Z");
        frame.group_by = GroupBy::Assignee;
        frame.sections = vec![SectionKind::Overdue];
        let mut ada = task("1");
        ada.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
        let mut bob = task("2");
        bob.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
        bob.assignee = Some(Person {
            gid: "8".into(),
            name: "Bob".into(),
            email: None,
        });
        let mut nobody = task("3");
        nobody.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
        nobody.assignee = None;
        let model = build(&collected(vec![bob, ada, nobody]), &frame);
        let names: Vec<&str> = model.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Ada", "Bob", "Unassigned"]);
        assert_eq!(model.total, 3);
        let part = model.only_group("9");
        assert_eq!(part.total, 1);
        assert_eq!(part.sections[0].count, 1);
        assert_eq!(part.groups[0].email.as_deref(), Some("ada@example.com"));
    }

    #[test]
    fn max_tasks_lists_the_first_and_counts_the_rest() {
        let mut frame = frame(chrono_tz::UTC, "2026-12-07T09:00:00Z");
        frame.max_tasks = 2;
        frame.sections = vec![SectionKind::Overdue];
        let tasks: Vec<TaskFacts> = (1..=5)
            .map(|day| {
                let mut t = task(&day.to_string());
                t.due_on = NaiveDate::from_ymd_opt(2026, 12, day);
                t
            })
            .collect();
        let model = build(&collected(tasks), &frame);
        let section = &model.groups[0].sections[0];
        assert_eq!(
            (section.count, section.more, section.tasks.len()),
            (5, 3, 2)
        );
        assert_eq!(section.tasks[0].gid, "1", "the most overdue first");
    }
}
