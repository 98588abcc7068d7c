//! Job file validation: every malformed job file under `tests/fixtures/jobs/bad/` is rejected
//! with its exact `file:line:col: message` and a hint; a directory of bad files is reported
//! whole, in file order; a valid directory loads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use asana_worker::config::diagnostics::Diagnostic;
use asana_worker::config::jobs::{MisfirePolicy, OverlapPolicy, Schedule, ValidationContext};
use asana_worker::jobs::{Kind as JobKind, load_dir, load_file};

const BAD: &str = "tests/fixtures/jobs/bad";

fn context() -> ValidationContext {
    ValidationContext {
        credentials: ["service-account", "pat-paid"]
            .into_iter()
            .map(String::from)
            .collect(),
        ..ValidationContext::default()
    }
}

/// One expected diagnostic: `line:col` (empty for a problem of the whole file), the exact
/// message, and a substring of the hint.
type Expected = (&'static str, &'static str, &'static str);

/// Every malformed fixture with the diagnostics it must produce, in the order reported.
const CASES: &[(&str, &[Expected])] = &[
    (
        "digest_bad_template",
        &[(
            "13:12",
            "tests/fixtures/jobs/bad/digest_bad_template.md.j2:3: undefined value in `## {{ group.nmae }}`",
            "templates see title, today, period",
        )],
    ),
    (
        "digest_plain_smtp_to_a_remote_host",
        &[
            (
                "13:7",
                "tls = \"none\" would send the digest and the password in clear text to smtp.example.com",
                "\"none\" is allowed only for a relay on 127.0.0.1",
            ),
            (
                "15:6",
                "to = \"assignees\" sends each assignee their own group, but the digest is not grouped by assignee",
                "set group_by = \"assignee\"",
            ),
        ],
    ),
    (
        "sync_projects_and_teams",
        &[(
            "9:9",
            "set `projects` or `teams`, not both",
            "keep the list of projects, or the list of teams",
        )],
    ),
    (
        "sync_stories_without_tasks",
        &[(
            "8:13",
            "`stories` is read per task, but `tasks` is not in `resources`",
            "add \"tasks\" to resources",
        )],
    ),
    (
        "sync_unknown_resource",
        &[(
            "8:23",
            "`resources` cannot be \"comments\"",
            "use one of \"workspace\", \"users\"",
        )],
    ),
    (
        "audit_log_page_size_over_100",
        &[(
            "8:13",
            "`page_size` is out of range: use a whole number from 1 to 100",
            "Events per request (1 to 100)",
        )],
    ),
    (
        "audit_log_start_beyond_retention",
        &[(
            "8:9",
            "`start` is 120d, but Asana keeps audit-log events for 90 days",
            "use at most start = \"90d\"",
        )],
    ),
    (
        "audit_log_workspace_not_a_gid",
        &[(
            "7:13",
            "`workspace` must be an Asana gid (digits only), found \"not-a-gid\"",
            "e.g. workspace = \"1204567890123456\"",
        )],
    ),
    (
        "export_deliver_not_a_document_sink",
        &[(
            "11:8",
            "unknown sink type \"sqlite\"",
            "sink types: [\"file\", \"s3\"",
        )],
    ),
    (
        "resource_export_empty_types",
        &[(
            "8:18",
            "`resource_types` must list at least 1 value",
            "e.g. resource_types = [\"task\", \"team\"]",
        )],
    ),
    (
        "resource_export_unknown_type",
        &[(
            "8:27",
            "`resource_types` cannot be \"tasks\"",
            "did you mean \"task\"?",
        )],
    ),
    (
        "credential_wrong_type",
        &[(
            "4:14",
            "`credential` must be a string, found an array",
            "credential = \"service-account\"",
        )],
    ),
    (
        "cron_bad_weekday",
        &[(
            "3:12",
            "invalid cron expression \"0 9 * * MON-FRY\": day-of-week field \"MON-FRY\": CronPattern contains illegal character 'F' in part '1-FRY'",
            "day-of-week takes 0-7 or SUN-SAT",
        )],
    ),
    (
        "cron_never_fires",
        &[(
            "3:12",
            "cron expression \"0 0 30 2 *\" never fires",
            "such as February 30th",
        )],
    ),
    (
        "cron_out_of_range",
        &[(
            "3:12",
            "invalid cron expression \"61 * * * *\": minute field \"61\": Number out of bounds",
            "minute takes 0-59",
        )],
    ),
    (
        "cron_unknown_alias",
        &[(
            "3:12",
            "unknown cron alias \"@minutely\"",
            "aliases: @yearly @annually @monthly @weekly @daily @hourly",
        )],
    ),
    (
        "cron_with_seconds",
        &[(
            "3:12",
            "cron expression \"0 */5 * * * *\" has 6 fields, 5 expected",
            "no seconds field",
        )],
    ),
    (
        "duplicate_key",
        &[(
            "5:1",
            "invalid TOML: duplicate key `name`",
            "each key appears once",
        )],
    ),
    (
        "empty",
        &[("", "the job file is empty", "a job needs at least: name")],
    ),
    (
        "enabled_string",
        &[(
            "5:11",
            "`enabled` must be true or false, found a string",
            "enabled = false",
        )],
    ),
    (
        "every_not_a_duration",
        &[(
            "3:9",
            "invalid duration \"five minutes\": expected number at 0",
            "\"30s\", \"5m\"",
        )],
    ),
    (
        "every_subsecond",
        &[(
            "3:9",
            "`every` must be a whole number of seconds",
            "every = \"5m\"",
        )],
    ),
    (
        "every_too_long",
        &[(
            "3:9",
            "`every` is longer than 366 days",
            "schedule = \"@yearly\"",
        )],
    ),
    (
        "every_with_timezone",
        &[(
            "4:12",
            "`timezone` has no effect with `every`",
            "use a cron `schedule` to fire at local times",
        )],
    ),
    (
        "every_zero",
        &[("3:9", "`every` must be longer than zero", "every = \"5m\"")],
    ),
    (
        "invalid_name",
        &[(
            "1:8",
            "invalid job name \"nightly check!\"",
            "letters, digits, '-', '_' or '.'",
        )],
    ),
    (
        "many_problems",
        &[
            (
                "4:12",
                "cron expression \"*/5 * * *\" has 4 fields, 5 expected",
                "use 5 fields (minute hour day-of-month month day-of-week)",
            ),
            (
                "5:12",
                "unknown time zone \"Europe/Berln\"",
                "did you mean \"Europe/Berlin\"?",
            ),
            (
                "6:14",
                "unknown credential \"nobody\"",
                "known credentials: pat-paid, service-account",
            ),
            (
                "7:11",
                "unknown misfire policy \"sometimes\"",
                "use one of \"skip\", \"once\", \"all\"",
            ),
            (
                "9:16",
                "`max_attempts` must be an integer, found a float",
                "max_attempts = 5",
            ),
            (
                "10:17",
                "invalid duration \"10 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
                "\"1h30m\"",
            ),
            (
                "11:1",
                "unknown field `colour`",
                "a kind's own settings go under [settings]",
            ),
            (
                "14:18",
                "`expected_owner` must be a string, found an integer",
                "expected_owner = \"…\"",
            ),
        ],
    ),
    (
        "max_attempts_negative",
        &[(
            "5:16",
            "`max_attempts` is out of range",
            "a whole number from 1 to 4294967295",
        )],
    ),
    (
        "max_attempts_string",
        &[(
            "5:16",
            "`max_attempts` must be an integer, found a string",
            "max_attempts = 5",
        )],
    ),
    (
        "max_attempts_zero",
        &[(
            "5:16",
            "`max_attempts` must be at least 1",
            "1 means no retries",
        )],
    ),
    (
        "misfire_max_without_all",
        &[(
            "6:15",
            "`misfire_max` only applies to misfire = \"all\"",
            "remove it or set misfire = \"all\"",
        )],
    ),
    (
        "misfire_max_zero",
        &[(
            "6:15",
            "`misfire_max` must be at least 1",
            "caps the catch-up runs",
        )],
    ),
    (
        "misfire_unknown",
        &[(
            "5:11",
            "unknown misfire policy \"al\"",
            "did you mean \"all\"?",
        )],
    ),
    (
        "missing_credential",
        &[(
            "",
            "missing required field `credential`",
            "credential = \"service-account\"",
        )],
    ),
    (
        "missing_name_and_kind",
        &[
            ("", "missing required field `name`", "add a unique name"),
            (
                "",
                "missing required field `kind`",
                "one of: credential_check",
            ),
        ],
    ),
    (
        "missing_schedule",
        &[(
            "",
            "the job has no `schedule` or `every`",
            "or every = \"5m\"",
        )],
    ),
    (
        "name_not_a_string",
        &[(
            "1:8",
            "`name` must be a string, found an integer",
            "name = \"audit-log-hourly\"",
        )],
    ),
    (
        "not_utf8",
        &[(
            "3:6",
            "the file is not valid UTF-8 (byte 0xe9)",
            "re-save the file as UTF-8",
        )],
    ),
    (
        "only_comments",
        &[("", "the job file is empty", "a job needs at least")],
    ),
    (
        "overlap_unknown",
        &[(
            "5:11",
            "unknown overlap policy \"Queue\"",
            "did you mean \"queue\"?",
        )],
    ),
    (
        "retry_initial_longer",
        &[(
            "5:17",
            "`retry_initial` (5m) is longer than `retry_max` (1m)",
            "make retry_initial the shorter",
        )],
    ),
    (
        "retry_subsecond",
        &[(
            "5:17",
            "`retry_initial` must be a whole number of seconds",
            "retry_initial = \"10s\"",
        )],
    ),
    (
        "schedule_and_every",
        &[("4:1", "both `schedule` and `every` are set", "keep one")],
    ),
    (
        "settings_not_a_table",
        &[(
            "5:12",
            "`settings` must be a table, found an integer",
            "[settings] on its own line",
        )],
    ),
    (
        "settings_unknown_keys",
        &[
            (
                "7:1",
                "unknown setting `expected_ownr` for kind \"credential_check\"",
                "did you mean `expected_owner`?",
            ),
            (
                "8:1",
                "unknown setting `verbose` for kind \"credential_check\"",
                "credential_check accepts: expected_owner (string, default none)",
            ),
        ],
    ),
    (
        "settings_wrong_type",
        &[(
            "7:18",
            "`expected_owner` must be a string, found a boolean",
            "expected_owner = \"…\"",
        )],
    ),
    (
        "timeout_number",
        &[(
            "5:11",
            "`timeout` must be a duration string, found a number",
            "timeout = \"30m\"",
        )],
    ),
    (
        "timezone_wrong_case",
        &[(
            "4:12",
            "unknown time zone \"europe/berlin\"",
            "did you mean \"Europe/Berlin\"?",
        )],
    ),
    (
        "toml_syntax_error",
        &[(
            "3:12",
            "invalid TOML: string values must be quoted, expected literal string",
            "strings need double quotes",
        )],
    ),
    (
        "unknown_credential",
        &[(
            "4:14",
            "unknown credential \"service-acount\"",
            "did you mean \"service-account\"?",
        )],
    ),
    (
        "unknown_fields",
        &[
            ("4:1", "unknown field `timzone`", "did you mean `timezone`?"),
            (
                "6:1",
                "unknown field `retries`",
                "the job fields are name, kind, schedule, every",
            ),
        ],
    ),
    (
        "unknown_kind",
        &[(
            "2:8",
            "unknown job kind \"newsletter\"",
            "known kinds: credential_check",
        )],
    ),
    (
        "unknown_kind_typo",
        &[(
            "2:8",
            "unknown job kind \"credentials_check\"",
            "did you mean \"credential_check\"?",
        )],
    ),
    (
        "unknown_timezone",
        &[(
            "4:12",
            "unknown time zone \"Mars/Olympus\"",
            "use an IANA zone name",
        )],
    ),
];

fn fixture(case: &str) -> PathBuf {
    Path::new(BAD).join(format!("{case}.toml"))
}

/// Differences between what a file produced and what was expected; empty when they match.
fn mismatches(path: &Path, found: &[Diagnostic], expected: &[Expected]) -> Vec<String> {
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    let mut wrong = Vec::new();
    if found.len() != expected.len() {
        wrong.push(format!(
            "{}: {} diagnostics, {} expected: {shown:#?}",
            path.display(),
            found.len(),
            expected.len()
        ));
        return wrong;
    }
    for (diagnostic, (place, message, hint)) in found.iter().zip(expected) {
        let text = diagnostic.to_string();
        let first_line = text.lines().next().unwrap_or_default();
        let want = if place.is_empty() {
            format!("{}: {message}", path.display())
        } else {
            format!("{}:{place}: {message}", path.display())
        };
        if first_line != want {
            wrong.push(format!("got  {first_line}\nwant {want}"));
        }
        match &diagnostic.hint {
            Some(actual) if actual.contains(hint) => {}
            other => wrong.push(format!(
                "{want}\n  hint {other:?} does not contain {hint:?}"
            )),
        }
    }
    wrong
}

#[test]
fn every_malformed_job_file_gets_its_exact_diagnostics() {
    let context = context();
    let mut wrong = Vec::new();
    for (case, expected) in CASES {
        let path = fixture(case);
        match load_file(&path, &context) {
            Ok(job) => wrong.push(format!("{}: accepted as {job:?}", path.display())),
            Err(found) => wrong.extend(mismatches(&path, &found, expected)),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}

#[test]
fn every_bad_fixture_has_a_case_and_there_are_enough() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(BAD)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        // Not job files: a template a fixture names.
        .filter(|name| name.ends_with(".toml"))
        .collect();
    let cases: BTreeSet<String> = CASES
        .iter()
        .map(|(case, _)| format!("{case}.toml"))
        .collect();
    assert_eq!(on_disk, cases, "fixtures and cases differ");
    assert_eq!(cases.len(), CASES.len(), "a case is listed twice");
    assert!(
        CASES.len() >= 25,
        "only {} malformed job files",
        CASES.len()
    );
}

#[test]
fn a_directory_of_bad_files_reports_every_problem_of_every_file_in_file_order() {
    let found = load_dir(Path::new(BAD), &context()).unwrap_err().0;
    let mut sorted_cases: Vec<&(&str, &[Expected])> = CASES.iter().collect();
    sorted_cases.sort_by_key(|(case, _)| fixture(case));
    let mut offset = 0;
    let mut wrong = Vec::new();
    for (case, expected) in sorted_cases {
        let path = fixture(case);
        let end = (offset + expected.len()).min(found.len());
        wrong.extend(mismatches(&path, &found[offset..end], expected));
        offset = end;
    }
    assert_eq!(
        found.len(),
        CASES
            .iter()
            .map(|(_, expected)| expected.len())
            .sum::<usize>()
    );
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
    // The whole report prints one problem after another, each with its hint.
    let printed = asana_worker::config::diagnostics::Diagnostics(found).to_string();
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.starts_with("  hint: "))
            .count(),
        offset
    );
}

#[test]
fn a_valid_directory_loads_with_every_field() {
    let jobs = load_dir(Path::new("tests/fixtures/jobs/good"), &context()).unwrap();
    let names: Vec<&str> = jobs.iter().map(|job| job.name.as_str()).collect();
    // Sorted by file name; the dotfile (an editor lock file) and README.md are not jobs.
    assert_eq!(names, ["audit-hourly", "minimal"]);

    let full = &jobs[0];
    assert_eq!(full.kind.name(), "credential_check");
    let JobKind::CredentialCheck(settings) = &full.kind else {
        panic!("a credential_check job");
    };
    assert_eq!(
        settings.expected_owner.as_deref(),
        Some("service-account@example.com")
    );
    assert!(
        matches!(&full.schedule, Schedule::Cron { expression, .. } if expression == "0 * * * 1-5")
    );
    assert_eq!(full.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(full.credential, "service-account");
    assert_eq!(full.misfire, MisfirePolicy::All { max: 24 });
    assert_eq!(full.overlap, OverlapPolicy::Queue);
    assert_eq!(full.max_attempts, 3);
    assert_eq!(full.retry_initial, Duration::from_secs(30));
    assert_eq!(full.retry_max, Duration::from_secs(300));
    assert_eq!(full.timeout, Duration::from_secs(600));
    assert!(!full.enabled);
    assert_eq!(
        full.source,
        Path::new("tests/fixtures/jobs/good/audit-hourly.toml")
    );

    let minimal = &jobs[1];
    let JobKind::CredentialCheck(settings) = &minimal.kind else {
        panic!("a credential_check job");
    };
    assert_eq!(settings.expected_owner, None);
    assert_eq!(minimal.schedule, Schedule::Every(Duration::from_secs(300)));
    assert_eq!(minimal.timezone, chrono_tz::UTC);
    assert_eq!(minimal.misfire, MisfirePolicy::Once);
    assert_eq!(minimal.overlap, OverlapPolicy::Skip);
    assert_eq!(minimal.max_attempts, 5);
    assert_eq!(minimal.retry_initial, Duration::from_secs(10));
    assert_eq!(minimal.retry_max, Duration::from_secs(600));
    assert_eq!(minimal.timeout, Duration::from_secs(3600));
    assert!(minimal.enabled);
}

#[test]
fn duplicate_names_are_reported_in_the_later_file_with_its_other_problems() {
    let dir = Path::new("tests/fixtures/jobs/duplicate");
    let found = load_dir(dir, &context()).unwrap_err().0;
    let path = dir.join("b.toml");
    let wrong = mismatches(
        &path,
        &found,
        &[
            (
                "2:8",
                "duplicate job name \"same\"",
                "it is already defined in tests/fixtures/jobs/duplicate/a.toml",
            ),
            (
                "6:16",
                "`max_attempts` must be at least 1",
                "1 means no retries",
            ),
        ],
    );
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}

#[test]
fn a_directory_named_like_a_job_file_is_reported_with_the_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("b.toml")).unwrap();
    std::fs::copy(fixture("every_zero"), dir.path().join("a.toml")).unwrap();
    std::fs::copy(fixture("unknown_kind"), dir.path().join("c.toml")).unwrap();
    std::fs::copy(
        "tests/fixtures/jobs/good/minimal.toml",
        dir.path().join("d.toml"),
    )
    .unwrap();
    let found = load_dir(dir.path(), &context()).unwrap_err().0;
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 3, "{shown:#?}");
    let place = |name: &str| dir.path().join(name).display().to_string();
    assert!(
        shown[0].starts_with(&format!(
            "{}:3:9: `every` must be longer than zero",
            place("a.toml")
        )),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with(&format!(
            "{}: is a directory, not a job file",
            place("b.toml")
        )),
        "{shown:#?}"
    );
    assert!(
        shown[1].contains("hint: job files are regular files"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with(&format!(
            "{}:2:8: unknown job kind \"newsletter\"",
            place("c.toml")
        )),
        "{shown:#?}"
    );
    // Once the bad entries are gone, the rest loads.
    std::fs::remove_dir(dir.path().join("b.toml")).unwrap();
    std::fs::remove_file(dir.path().join("a.toml")).unwrap();
    std::fs::remove_file(dir.path().join("c.toml")).unwrap();
    let jobs = load_dir(dir.path(), &context()).unwrap();
    assert_eq!(jobs.len(), 1);
}

#[test]
fn a_missing_jobs_directory_is_one_problem_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("jobs");
    let found = load_dir(&missing, &context()).unwrap_err().0;
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .message
            .starts_with("cannot read the jobs directory:"),
        "{}",
        found[0]
    );
    assert!(
        found[0]
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("ASANA_WORKER__JOBS__DIR")
    );
}

#[test]
fn without_configured_credentials_the_hint_says_how_to_add_one() {
    let found = load_file(
        Path::new("tests/fixtures/jobs/good/minimal.toml"),
        &ValidationContext::default(),
    )
    .unwrap_err();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string().lines().next(),
        Some("tests/fixtures/jobs/good/minimal.toml:4:14: unknown credential \"pat-paid\"")
    );
    assert!(
        found[0]
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("no credentials are configured")
    );
}

/// The `toml` code blocks of docs/configuration.md after `heading`.
fn doc_examples(heading: &str) -> Vec<String> {
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let section = &doc[doc.find(heading).expect("heading in docs/configuration.md")..];
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| block[..block.find("```").unwrap()].to_string())
        .collect()
}

#[test]
fn the_documented_examples_are_valid() {
    let job = &doc_examples("## Job files")[0];
    let spec = asana_worker::jobs::parse_job(Path::new("docs/job.toml"), job, &context())
        .unwrap_or_else(|problems| panic!("{problems:#?}"));
    assert_eq!(spec.misfire, MisfirePolicy::All { max: 10 });

    let config = &doc_examples("### A complete example")[0];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let settings = asana_worker::config::settings::Settings::load(Some(&path)).unwrap();
    assert!(settings.credentials.contains_key("service-account"));
    assert_eq!(settings.worker.per_kind.get("credential_check"), Some(&1));
}

/// The cron forms docs/configuration.md promises.
#[test]
fn the_documented_cron_forms_parse() {
    for expression in [
        "*/15 * * * *",
        "0 9 * * 1-5",
        "0 0 1,15 JAN-MAR *",
        "0 0 13 * FRI",
        "0 0 L * *",
        "0 0 * * FRI#2",
        "0 0 15W * *",
        "0 0 * * 7",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@hourly",
    ] {
        asana_worker::config::jobs::parse_cron(expression)
            .unwrap_or_else(|error| panic!("{expression}: {error}"));
    }
    for expression in ["0 0 0 * * *", "0 0 * * * 2026", "0 0 30 2 *", "@reboot"] {
        assert!(
            asana_worker::config::jobs::parse_cron(expression).is_err(),
            "{expression} was accepted"
        );
    }
}

const VALID: &str = "name = \"p\"\nkind = \"credential_check\"\nschedule = \"*/5 * * * *\"\ntimezone = \"Europe/Berlin\"\ncredential = \"pat-paid\"\nmisfire = \"all\"\nmisfire_max = 3\nretry_initial = \"10s\"\n\n[settings]\nexpected_owner = \"1200000000000001\"\n";

/// Checks the contract for any input: no panic, and a rejection always says why, at a place
/// inside the file.
fn check_contract(source: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    let path = Path::new("jobs/p.toml");
    if let Err(problems) = asana_worker::jobs::parse_job(path, source, &context()) {
        proptest::prop_assert!(!problems.is_empty(), "rejected without a reason");
        let lines = source.split('\n').count();
        for problem in &problems {
            proptest::prop_assert_eq!(problem.file.as_path(), path);
            proptest::prop_assert!(problem.hint.is_some(), "no hint: {}", problem);
            if let Some(line) = problem.line {
                proptest::prop_assert!(line >= 1 && line <= lines, "{} outside the file", problem);
            }
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    #[test]
    fn any_text_is_accepted_or_rejected_with_reasons(source in "[a-z_\\[\\]=\" \\n0-9*@#.,{}-]{0,120}") {
        check_contract(&source)?;
    }

    #[test]
    fn a_valid_file_with_one_line_replaced_is_accepted_or_rejected_with_reasons(
        line in 0usize..11,
        replacement in "[a-z_\\[\\]=\" 0-9*@#/.-]{0,40}",
    ) {
        let mut lines: Vec<&str> = VALID.split('\n').collect();
        lines[line] = &replacement;
        check_contract(&lines.join("\n"))?;
    }
}

#[test]
fn the_property_tests_start_from_a_valid_file() {
    asana_worker::jobs::parse_job(Path::new("jobs/p.toml"), VALID, &context()).unwrap();
}

/// docs/configuration.md lists every setting of every kind and sink as its struct declares it
/// (type, default, meaning): the rows are generated from the structs (`asana-worker jobs schema
/// KIND --markdown`), so a setting added, removed or given a new default fails here until the
/// reference says so.
#[test]
fn the_configuration_reference_lists_every_setting_as_the_structs_declare_it() {
    let docs = std::fs::read_to_string("docs/configuration.md").unwrap();
    let mut missing = Vec::new();
    for kind in asana_worker::jobs::Kind::NAMES {
        for table in asana_worker::jobs::reference::tables(kind).unwrap() {
            let markdown = asana_worker::jobs::reference::markdown(&table);
            for row in markdown.lines().skip(2) {
                if !docs.lines().any(|line| line == row) {
                    missing.push(format!("{}:\n{row}", table.title));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks these rows (print them with `asana-worker jobs schema KIND --markdown`):\n{}",
        missing.join("\n")
    );
}
