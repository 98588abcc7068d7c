//! The simulator's exports: organization exports (`state`), graph and resource export jobs
//! (`status`), downloads with and without Range, URL expiry, failures, the per-user job cap and
//! the one-resource-export-per-workspace rule.

mod support;
use support::sim::SimAdmin;

use std::io::Read;
use std::time::{Duration, Instant};

use asana_worker::sim::config::{SimConfig, Tier, TokenKind, TokenSpec};
use flate2::read::GzDecoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SA: &str = "sim-sa-0001";
const SA_TWIN: &str = "sim-sa-0002";
const PAT: &str = "sim-pat-paid-0001";
const FREE: &str = "sim-pat-free-0001";

fn token(name: &str, kind: TokenKind, user: usize, enterprise: bool, secret: &str) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        kind,
        tier: Tier::Paid,
        user,
        enterprise,
        secret: Some(secret.into()),
        forbidden_projects: Vec::new(),
    }
}

/// Fast simulated time: 20x, exports pending 2 s and running `running` s (simulated).
fn config(running: u64) -> SimConfig {
    let mut config = SimConfig::default();
    // A smaller world keeps file building quick in debug builds.
    config.world.tasks_per_project = 12;
    config.world.audit_events = 50;
    config.time_scale = 20.0;
    config.timing.export_pending_secs = 2;
    config.timing.export_running_secs = running;
    config.timing.download_url_ttl_secs = 10;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    config.tokens = vec![
        token("service-account", TokenKind::ServiceAccount, 0, true, SA),
        token(
            "service-account-twin",
            TokenKind::ServiceAccount,
            0,
            true,
            SA_TWIN,
        ),
        token("pat-paid", TokenKind::Pat, 1, true, PAT),
        token("pat-free", TokenKind::Pat, 2, false, FREE),
    ];
    config
}

/// The shared simulator client with the export calls of these tests.
struct Sim(support::sim::Sim);

impl std::ops::Deref for Sim {
    type Target = support::sim::Sim;
    fn deref(&self) -> &support::sim::Sim {
        &self.0
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        Sim(support::sim::Sim::start(config).await)
    }

    fn workspace(&self) -> String {
        self.server.state().world().workspace.gid.clone()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let (status, body, headers) = self.call_as(token, method, path, body).await;
        Reply {
            status: status.as_u16(),
            headers,
            body,
        }
    }

    async fn post(&self, token: &str, path: &str, data: Value) -> Reply {
        self.call(
            reqwest::Method::POST,
            token,
            path,
            Some(json!({ "data": data })),
        )
        .await
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let method = match body {
            Some(_) => reqwest::Method::POST,
            None => reqwest::Method::GET,
        };
        let (status, answer) = self.0.admin(method, path, body).await;
        assert!(status.is_success(), "/_sim{path}: {status} {answer}");
        answer
    }

    async fn org_export(&self, token: &str) -> Reply {
        self.post(
            token,
            "/organization_exports",
            json!({ "organization": self.workspace() }),
        )
        .await
    }

    /// Polls `path` until `field` is one of `terminal`; returns every value seen, in order, and
    /// the last body.
    async fn poll(
        &self,
        token: &str,
        path: &str,
        field: &str,
        terminal: &[&str],
    ) -> (Vec<String>, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen: Vec<String> = Vec::new();
        loop {
            let reply = self.get(token, path).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let value = reply.body["data"][field]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if seen.last() != Some(&value) {
                seen.push(value.clone());
            }
            if terminal.contains(&value.as_str()) {
                return (seen, reply.body["data"].clone());
            }
            assert!(
                Instant::now() < deadline,
                "{path} never reached {terminal:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    async fn download(&self, url: &str, range: Option<(u64, u64)>) -> reqwest::Response {
        let mut request = self.client.get(url);
        if let Some((start, end)) = range {
            request = request.header("Range", format!("bytes={start}-{end}"));
        }
        request.send().await.expect("download")
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("valid gzip");
    text
}

#[tokio::test]
async fn organization_export_runs_pending_started_finished_and_downloads_with_ranges() {
    let sim = Sim::start(config(8)).await;
    let created = sim.org_export(SA).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let data = &created.body["data"];
    let gid = data["gid"].as_str().unwrap().to_string();
    assert_eq!(data["resource_type"], "organization_export");
    assert_eq!(data["state"], "pending");
    assert!(data["download_url"].is_null());
    assert_eq!(data["organization"]["gid"], sim.workspace());
    assert_eq!(data["organization"]["resource_type"], "workspace");
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));
    let location = created.headers["location"].to_str().unwrap();
    assert!(location.ends_with(&format!("/organization_exports/{gid}")));

    let path = format!("/organization_exports/{gid}");
    let (mut states, data) = sim.poll(SA, &path, "state", &["finished", "error"]).await;
    if states.first().map(String::as_str) != Some("pending") {
        states.insert(0, "pending".into()); // as the POST answered
    }
    assert_eq!(states, vec!["pending", "started", "finished"]);
    let url = data["download_url"]
        .as_str()
        .expect("download_url once finished");
    assert!(url.starts_with(&format!("{}/_sim/downloads/", sim.server.origin())));

    let admin = sim.admin(&format!("/exports/{gid}"), None).await;
    let expected_sha = admin["sha256"].as_str().unwrap().to_string();
    let size = admin["bytes"].as_u64().unwrap();

    let whole = sim.download(url, None).await;
    assert_eq!(whole.status().as_u16(), 200);
    let whole = whole.bytes().await.unwrap();
    assert_eq!(whole.len() as u64, size);
    assert_eq!(sha256(&whole), expected_sha);

    // The same file fetched in ranged pieces.
    let mut pieces = Vec::new();
    let chunk = size / 3 + 1;
    let mut start = 0;
    while start < size {
        let end = (start + chunk - 1).min(size - 1);
        let response = sim.download(url, Some((start, end))).await;
        assert_eq!(response.status().as_u16(), 206);
        let range = response.headers()["content-range"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(range, format!("bytes {start}-{end}/{size}"));
        pieces.extend_from_slice(&response.bytes().await.unwrap());
        start = end + 1;
    }
    assert_eq!(sha256(&pieces), expected_sha);

    let export: Value = serde_json::from_str(&gunzip(&whole)).expect("JSON inside");
    let world = sim.server.state().world().clone();
    assert_eq!(export["workspace"]["gid"], world.workspace.gid);
    assert_eq!(export["users"].as_array().unwrap().len(), world.users.len());
    assert_eq!(
        export["projects"].as_array().unwrap().len(),
        world.projects.len()
    );
    assert_eq!(
        export["tasks"].as_array().unwrap().len(),
        world.tasks.iter().filter(|t| !t.deleted).count()
    );

    // Deterministic: a second export of the same world has the same bytes.
    let again = sim.org_export(SA).await;
    let again_gid = again.body["data"]["gid"].as_str().unwrap().to_string();
    sim.poll(
        SA,
        &format!("/organization_exports/{again_gid}"),
        "state",
        &["finished"],
    )
    .await;
    let admin = sim.admin(&format!("/exports/{again_gid}"), None).await;
    assert_eq!(admin["sha256"], json!(expected_sha));
    sim.0.shutdown().await;
}

#[tokio::test]
async fn download_urls_expire_and_a_new_get_mints_a_fresh_one() {
    let sim = Sim::start(config(1)).await;
    let gid = sim.org_export(SA).await.body["data"]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/organization_exports/{gid}");
    let (_, data) = sim.poll(SA, &path, "state", &["finished"]).await;
    let old = data["download_url"].as_str().unwrap().to_string();
    assert_eq!(sim.download(&old, None).await.status().as_u16(), 200);
    SimAdmin::of(&sim.server).advance(14).await; // past the URL's 10 s
    let expired = sim.download(&old, None).await;
    assert_eq!(expired.status().as_u16(), 403);
    let text = expired.text().await.unwrap();
    assert!(
        text.contains("<Code>AccessDenied</Code>") && text.contains("expired"),
        "{text}"
    );
    let fresh = sim.get(SA, &path).await.body["data"]["download_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(fresh, old);
    assert_eq!(sim.download(&fresh, None).await.status().as_u16(), 200);
    let forged = format!("{}x", fresh);
    assert_eq!(sim.download(&forged, None).await.status().as_u16(), 403);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn exports_can_be_made_to_fail() {
    let sim = Sim::start(config(1)).await;
    sim.admin("/exports/fail_next", Some(json!({ "count": 1 })))
        .await;
    let failing = sim.org_export(SA).await.body["data"]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let fine = sim.org_export(SA).await.body["data"]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let (states, data) = sim
        .poll(
            SA,
            &format!("/organization_exports/{failing}"),
            "state",
            &["finished", "error"],
        )
        .await;
    assert_eq!(states.last().map(String::as_str), Some("error"));
    assert!(data["download_url"].is_null());
    let (states, _) = sim
        .poll(
            SA,
            &format!("/organization_exports/{fine}"),
            "state",
            &["finished", "error"],
        )
        .await;
    assert_eq!(states.last().map(String::as_str), Some("finished"));

    sim.admin("/exports/fail_next", Some(json!({}))).await;
    let parent = sim
        .server
        .state()
        .world()
        .projects
        .at(0)
        .unwrap()
        .gid
        .clone();
    let job = sim
        .post(SA, "/exports/graph", json!({ "parent": parent }))
        .await;
    let job_gid = job.body["data"]["gid"].as_str().unwrap().to_string();
    let (statuses, data) = sim
        .poll(
            SA,
            &format!("/jobs/{job_gid}"),
            "status",
            &["succeeded", "failed"],
        )
        .await;
    assert_eq!(statuses.last().map(String::as_str), Some("failed"));
    assert!(data["new_graph_export"]["download_url"].is_null());
    sim.0.shutdown().await;
}

#[tokio::test]
async fn a_sixth_concurrent_export_of_one_user_gets_429_until_one_finishes() {
    let sim = Sim::start(config(20)).await;
    let projects: Vec<String> = sim
        .server
        .state()
        .world()
        .projects
        .iter()
        .map(|p| p.gid.clone())
        .collect();
    let mut first_job = String::new();
    // Five jobs of user 0, spread over two of that user's tokens.
    for (i, token) in [SA, SA, SA_TWIN, SA_TWIN, SA].iter().enumerate() {
        let reply = if i == 4 {
            sim.org_export(token).await
        } else {
            sim.post(token, "/exports/graph", json!({ "parent": projects[i] }))
                .await
        };
        assert_eq!(reply.status, 201, "job {i}: {}", reply.body);
        if i == 0 {
            first_job = reply.body["data"]["gid"].as_str().unwrap().to_string();
        }
    }
    let refused = sim
        .post(SA_TWIN, "/exports/graph", json!({ "parent": projects[5] }))
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=22).contains(&retry_after), "Retry-After {retry_after}");
    // Another user is not affected.
    let other = sim
        .post(PAT, "/exports/graph", json!({ "parent": projects[5] }))
        .await;
    assert_eq!(other.status, 201, "{}", other.body);

    let stats = sim.admin("/stats", None).await;
    assert_eq!(
        stats["tokens"]["service-account-twin"]["rejected"]["jobs"],
        1
    );
    let peak = |name: &str| {
        stats["tokens"][name]["peak_concurrent_jobs"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(peak("service-account").max(peak("service-account-twin")), 5);

    sim.poll(SA, &format!("/jobs/{first_job}"), "status", &["succeeded"])
        .await;
    let admitted = sim
        .post(SA_TWIN, "/exports/graph", json!({ "parent": projects[5] }))
        .await;
    assert_eq!(admitted.status, 201, "{}", admitted.body);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn one_resource_export_per_workspace_and_its_file_is_filtered_json_lines() {
    let sim = Sim::start(config(6)).await;
    let world = sim.server.state().world().clone();
    let assignee = world
        .tasks
        .iter()
        .find_map(|t| t.assignee.clone())
        .expect("an assigned task");
    let request = json!({
        "workspace": sim.workspace(),
        "export_request_parameters": [
            {"resource_type": "task", "filters": {"assignee.any": [assignee]}, "fields": ["gid", "name", "assignee"]},
            {"resource_type": "team"},
        ],
    });
    let created = sim.post(SA, "/exports/resource", request.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let job = &created.body["data"];
    assert_eq!(job["resource_type"], "job");
    assert_eq!(job["resource_subtype"], "export_request");
    assert_eq!(job["status"], "not_started");
    assert_eq!(
        job["new_resource_export"]["resource_type"],
        "export_request"
    );
    let job_gid = job["gid"].as_str().unwrap().to_string();

    let second = sim.post(SA, "/exports/resource", request.clone()).await;
    assert_eq!(second.status, 403, "{}", second.body);
    assert!(
        second.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("one in progress")
    );
    // Resource exports are for service accounts only; bad parameters are 400.
    assert_eq!(
        sim.post(PAT, "/exports/resource", request.clone())
            .await
            .status,
        403
    );
    let bad = json!({"workspace": sim.workspace(), "export_request_parameters": [{"resource_type": "goal"}]});
    assert_eq!(sim.post(SA, "/exports/resource", bad).await.status, 400);
    let no_params = json!({"workspace": sim.workspace()});
    assert_eq!(
        sim.post(SA, "/exports/resource", no_params).await.status,
        400
    );

    let (statuses, data) = sim
        .poll(
            SA,
            &format!("/jobs/{job_gid}"),
            "status",
            &["succeeded", "failed"],
        )
        .await;
    let mut statuses = statuses;
    if statuses.first().map(String::as_str) != Some("not_started") {
        statuses.insert(0, "not_started".into()); // as the POST answered
    }
    assert_eq!(statuses, vec!["not_started", "in_progress", "succeeded"]);
    let export = &data["new_resource_export"];
    assert!(export["completed_at"].is_string());
    let url = export["download_url"].as_str().unwrap();
    let bytes = sim.download(url, None).await.bytes().await.unwrap();
    let lines: Vec<Value> = gunzip(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let tasks: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("assignee").is_some())
        .collect();
    let expected = world
        .tasks
        .iter()
        .filter(|t| !t.deleted && t.assignee.as_deref() == Some(assignee.as_str()))
        .count();
    assert_eq!(tasks.len(), expected);
    for task in tasks {
        assert_eq!(task["assignee"]["gid"], json!(assignee));
        let keys: Vec<&String> = task.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["assignee", "gid", "name"]);
    }
    let teams = lines
        .iter()
        .filter(|l| l["resource_type"] == "team")
        .count();
    assert_eq!(teams, world.teams.len());

    // Finished: the workspace may start another.
    assert_eq!(sim.post(SA, "/exports/resource", request).await.status, 201);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn jobs_are_visible_to_their_creator_and_graph_exports_check_their_input() {
    let sim = Sim::start(config(2)).await;
    let (team, project, task) = {
        let world = sim.server.state().world();
        (
            world.teams.at(0).unwrap().gid.clone(),
            world.projects.at(0).unwrap().gid.clone(),
            world.tasks.at(0).unwrap().gid.clone(),
        )
    };
    let created = sim
        .post(SA, "/exports/graph", json!({ "parent": team }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["data"]["resource_subtype"],
        "graph_export_request"
    );
    let job = created.body["data"]["gid"].as_str().unwrap().to_string();
    assert_eq!(sim.get(PAT, &format!("/jobs/{job}")).await.status, 403);
    assert_eq!(
        sim.get(SA_TWIN, &format!("/jobs/{job}")).await.status,
        200,
        "same user"
    );
    assert_eq!(sim.get(SA, "/jobs/12345").await.status, 404);

    assert_eq!(
        sim.post(SA, "/exports/graph", json!({ "parent": task }))
            .await
            .status,
        400
    );
    assert_eq!(
        sim.post(SA, "/exports/graph", json!({ "parent": "999" }))
            .await
            .status,
        404
    );
    assert_eq!(sim.post(SA, "/exports/graph", json!({})).await.status, 400);
    assert_eq!(
        sim.post(FREE, "/exports/graph", json!({ "parent": project }))
            .await
            .status,
        403
    );
    assert_eq!(sim.org_export(PAT).await.status, 403);
    assert_eq!(sim.org_export(FREE).await.status, 403);
    assert_eq!(
        sim.post(
            SA,
            "/organization_exports",
            json!({ "organization": "999" })
        )
        .await
        .status,
        404
    );

    let (_, data) = sim
        .poll(SA, &format!("/jobs/{job}"), "status", &["succeeded"])
        .await;
    let url = data["new_graph_export"]["download_url"].as_str().unwrap();
    let bytes = sim.download(url, None).await.bytes().await.unwrap();
    let export: Value = serde_json::from_str(&gunzip(&bytes)).unwrap();
    assert_eq!(export["parent"]["gid"], json!(team));
    let world = sim.server.state().world().clone();
    let team_projects = world.projects.iter().filter(|p| p.team == team).count();
    assert_eq!(export["projects"].as_array().unwrap().len(), team_projects);
    assert!(!export["tasks"].as_array().unwrap().is_empty());
    sim.0.shutdown().await;
}

#[tokio::test]
async fn a_size_knob_pads_the_file_for_large_downloads() {
    let sim = Sim::start(config(1)).await;
    let target = 3 * 1024 * 1024;
    sim.admin("/exports/size", Some(json!({ "bytes": target })))
        .await;
    let gid = sim.org_export(SA).await.body["data"]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, data) = sim
        .poll(
            SA,
            &format!("/organization_exports/{gid}"),
            "state",
            &["finished"],
        )
        .await;
    let admin = sim.admin(&format!("/exports/{gid}"), None).await;
    let size = admin["bytes"].as_u64().unwrap();
    assert!(size >= target && size < target + 512 * 1024, "size {size}");
    let url = data["download_url"].as_str().unwrap();
    let whole = sim.download(url, None).await.bytes().await.unwrap();
    assert_eq!(sha256(&whole), admin["sha256"].as_str().unwrap());
    let tail = sim.download(url, Some((size - 100, size - 1))).await;
    assert_eq!(tail.status().as_u16(), 206);
    assert_eq!(
        &tail.bytes().await.unwrap()[..],
        &whole[whole.len() - 100..]
    );
    let export: Value = serde_json::from_str(&gunzip(&whole)).expect("still valid JSON");
    assert!(!export["padding"].as_array().unwrap().is_empty());
    sim.0.shutdown().await;
}
