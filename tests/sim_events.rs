//! The simulator's Events API over real HTTP: the 412 handshake, repeatable answers, the 100 and
//! 1,000 event caps with `has_more`, token expiry in simulated time, events bubbling up from tasks
//! to their projects, and the background activity generator.

use std::time::Duration;

use asana_worker::sim::SimServer;
use asana_worker::sim::config::SimConfig;
use asana_worker::sim::routes::events::SYNC_INVALID_MESSAGE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Sim {
    server: SimServer,
    client: reqwest::Client,
    token: String,
}

fn quiet_config() -> SimConfig {
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.world.audit_events = 10;
    config
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        let server = SimServer::start(config).await.expect("simulator starts");
        let token = server.token("pat-paid").expect("paid token");
        Sim {
            server,
            client: reqwest::Client::new(),
            token,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{}", self.server.base_url(), path);
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Changes a task through the admin API, as another user of the organization would.
    async fn admin_change(&self, task: &str, fields: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/_sim/tasks/{task}", self.server.origin()))
            .json(&fields)
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("admin answer")
    }

    /// The 412 handshake: a fresh sync token for `path` (which carries `resource=` or is a
    /// workspace stream).
    async fn handshake(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
        assert_eq!(body["errors"][0]["message"], json!(SYNC_INVALID_MESSAGE));
        body["sync"]
            .as_str()
            .expect("a fresh sync token")
            .to_string()
    }

    async fn project_with_tasks(&self) -> (String, String, Vec<String>) {
        let ws = self.ok("/workspaces").await["data"][0]["gid"]
            .as_str()
            .unwrap()
            .to_string();
        let project = self.ok(&format!("/workspaces/{ws}/projects")).await["data"][0]["gid"]
            .as_str()
            .unwrap()
            .to_string();
        let tasks = self.ok(&format!("/projects/{project}/tasks")).await["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["gid"].as_str().unwrap().to_string())
            .collect();
        (ws, project, tasks)
    }
}

fn with_sync(path: &str, sync: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}sync={sync}")
}

#[tokio::test]
async fn handshake_then_changes_then_the_same_token_gives_the_same_answer() {
    let sim = Sim::start(quiet_config()).await;
    let (_, _, tasks) = sim.project_with_tasks().await;
    let task = &tasks[0];
    let stream = format!("/events?resource={task}");
    let first = sim.handshake(&stream).await;
    assert_ne!(
        sim.handshake(&stream).await,
        first,
        "each 412 names a new token"
    );

    let empty = sim.ok(&with_sync(&stream, &first)).await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["has_more"], json!(false));
    let quiet = empty["sync"].as_str().unwrap().to_string();

    let done = sim.ok(&format!("/tasks/{task}")).await["data"]["completed"] == json!(true);
    let changed = sim
        .admin_change(
            task,
            json!({"name": "Renamed by admin", "completed": !done}),
        )
        .await;
    assert_eq!(changed["data"]["name"], json!("Renamed by admin"));
    let answer = sim.ok(&with_sync(&stream, &quiet)).await;
    let events = answer["data"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{answer}");
    let fields: Vec<&str> = events
        .iter()
        .map(|e| e["change"]["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "completed"]);
    for event in events {
        assert_eq!(event["action"], json!("changed"));
        assert_eq!(event["resource"]["gid"], json!(task));
        assert_eq!(event["resource"]["resource_type"], json!("task"));
        assert_eq!(event["type"], json!("task"));
        assert!(event["parent"].is_null());
        assert!(event["created_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(events[0]["change"]["new_value"], json!("Renamed by admin"));
    assert_eq!(events[0]["resource"]["name"], json!("Renamed by admin"));

    sim.admin_change(task, json!({"notes": "later change"}))
        .await;
    let again = sim.ok(&with_sync(&stream, &quiet)).await;
    assert_eq!(
        again, answer,
        "re-requesting a token returns the same results"
    );
    let next = sim
        .ok(&with_sync(&stream, answer["sync"].as_str().unwrap()))
        .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 1);
    assert_eq!(next["data"][0]["change"]["field"], json!("notes"));

    let (status, body) = sim.get(&with_sync(&stream, "not-a-token")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(body["sync"].is_string());
    let (status, body) = sim.get("/events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"][0]["message"],
        json!("resource: Missing input")
    );
    let (status, _) = sim.get("/events?resource=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn events_bubble_up_from_tasks_and_subtasks_to_projects_and_the_workspace() {
    let sim = Sim::start(quiet_config()).await;
    let (ws, project, tasks) = sim.project_with_tasks().await;
    let project_stream = format!("/events?resource={project}");
    let workspace_stream = format!("/workspaces/{ws}/events");
    let other_stream = format!("/tasks/{}/events", tasks[1]);
    let project_sync = sim.handshake(&project_stream).await;
    let workspace_sync = sim.handshake(&workspace_stream).await;
    let other_sync = sim.handshake(&other_stream).await;

    let done = sim.ok(&format!("/tasks/{}", tasks[0])).await["data"]["completed"] == json!(true);
    let (status, _) = sim
        .call(
            Method::PUT,
            &format!("/tasks/{}", tasks[0]),
            Some(json!({"data": {"completed": !done, "name": "Done via API"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, story) = sim
        .call(
            Method::POST,
            &format!("/tasks/{}/stories", tasks[0]),
            Some(json!({"data": {"text": "a comment"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let story = story["data"]["gid"].as_str().unwrap().to_string();
    let counts = sim
        .ok(&format!(
            "/projects/{project}/tasks?opt_fields=num_subtasks"
        ))
        .await;
    let parent = counts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["num_subtasks"].as_u64() > Some(0))
        .expect("a task with subtasks")["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let subtask = sim.ok(&format!("/tasks/{parent}/subtasks")).await["data"][0]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    sim.admin_change(&subtask, json!({"name": "Subtask renamed"}))
        .await;
    let (status, created) = sim
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"data": {"name": "Fresh", "projects": [project]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let created = created["data"]["gid"].as_str().unwrap().to_string();

    let answer = sim.ok(&with_sync(&project_stream, &project_sync)).await;
    let events = answer["data"].as_array().unwrap();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["resource"]["gid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("changed".to_string(), tasks[0].clone()),
            ("changed".to_string(), tasks[0].clone()),
            ("added".to_string(), story.clone()),
            ("changed".to_string(), subtask.clone()),
            ("added".to_string(), created.clone()),
            ("added".to_string(), created.clone()),
        ]
    );
    assert_eq!(events[2]["parent"]["gid"], json!(tasks[0]));
    assert_eq!(events[2]["resource"]["resource_type"], json!("story"));
    assert_eq!(events[4]["parent"]["gid"], json!(project));
    assert_eq!(
        events[5]["parent"]["resource_type"],
        json!("section"),
        "a new task is added to its project and to its section"
    );
    let me = sim.ok("/users/me").await["data"]["gid"].clone();
    assert_eq!(events[0]["user"]["gid"], me, "API writes are the caller's");
    assert!(events[0]["user"]["name"].is_string());

    let workspace = sim.ok(&with_sync(&workspace_stream, &workspace_sync)).await;
    assert_eq!(workspace["data"], answer["data"]);
    let other = sim.ok(&with_sync(&other_stream, &other_sync)).await;
    assert_eq!(
        other["data"],
        json!([]),
        "another task's stream sees none of it"
    );

    let (status, body) = sim.get(&with_sync(&other_stream, &project_sync)).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "a token belongs to its stream: {body}"
    );

    let picked = sim
        .ok(&format!(
            "{}&opt_fields=action,resource.name,user.email",
            with_sync(&project_stream, &project_sync)
        ))
        .await;
    let first = &picked["data"][0];
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["action", "resource", "user"]);
    assert_eq!(first["resource"]["name"], json!("Done via API"));
    assert!(first["user"]["email"].as_str().unwrap().contains('@'));
    sim.server.shutdown().await;
}

#[tokio::test]
async fn at_most_100_events_per_call_with_has_more_until_caught_up() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, tasks) = sim.project_with_tasks().await;
    let project_stream = format!("/projects/{project}/events");
    let mut sync = sim.handshake(&project_stream).await;
    let total = 250;
    // Ten writers at a time keep this fast; each change has a distinct name to find it by.
    for chunk in (0..total).collect::<Vec<_>>().chunks(10) {
        let changes = chunk
            .iter()
            .map(|&i| sim.admin_change(&tasks[i % 5], json!({"name": format!("Change {i}")})));
        futures::future::join_all(changes).await;
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let answer = sim.ok(&with_sync(&project_stream, &sync)).await;
        let page = answer["data"].as_array().unwrap();
        sizes.push(page.len());
        seen.extend(
            page.iter()
                .map(|e| e["change"]["new_value"].as_str().unwrap().to_string()),
        );
        sync = answer["sync"].as_str().unwrap().to_string();
        if answer["has_more"] == json!(false) {
            break;
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    let mut expected: Vec<String> = (0..total).map(|i| format!("Change {i}")).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every event exactly once");
    let caught_up = sim.ok(&with_sync(&project_stream, &sync)).await;
    assert_eq!(caught_up["data"], json!([]));
    assert_eq!(caught_up["has_more"], json!(false));
    sim.server.shutdown().await;
}

#[tokio::test]
async fn the_workspace_stream_allows_1000_events_per_call() {
    let mut config = quiet_config();
    // About 3,000 generated changes per real second.
    config.timing.activity_per_minute = 180_000.0;
    let sim = Sim::start(config).await;
    let ws = sim.ok("/workspaces").await["data"][0]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = format!("/workspaces/{ws}/events");
    let sync = sim.handshake(&stream).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    assert_eq!(answer["data"].as_array().unwrap().len(), 1000);
    assert_eq!(answer["has_more"], json!(true));
    let next = sim
        .ok(&with_sync(&stream, answer["sync"].as_str().unwrap()))
        .await;
    assert!(!next["data"].as_array().unwrap().is_empty());
    sim.server.shutdown().await;
}

#[tokio::test]
async fn sync_tokens_expire_in_simulated_time() {
    let mut config = quiet_config();
    config.time_scale = 120.0;
    config.timing.sync_token_ttl_secs = 60;
    let sim = Sim::start(config).await;
    let (_, _, tasks) = sim.project_with_tasks().await;
    let stream = format!("/events?resource={}", tasks[0]);
    let sync = sim.handshake(&stream).await;
    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    let next = answer["sync"].as_str().unwrap().to_string();
    // 60 simulated seconds at 120x pass in half a real second.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = sim.get(&with_sync(&stream, &next)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(body["errors"][0]["message"], json!(SYNC_INVALID_MESSAGE));
    let fresh = body["sync"].as_str().unwrap();
    assert_ne!(fresh, next);
    let (status, _) = sim.get(&with_sync(&stream, fresh)).await;
    assert_eq!(status, StatusCode::OK, "the fresh token works");
    sim.server.shutdown().await;
}

#[tokio::test]
async fn the_activity_generator_produces_events_until_shutdown() {
    let mut config = quiet_config();
    config.time_scale = 60.0;
    config.timing.activity_per_minute = 60.0;
    let sim = Sim::start(config).await;
    let (ws, _, _) = sim.project_with_tasks().await;
    let stream = format!("/workspaces/{ws}/events");
    let sync = sim.handshake(&stream).await;
    // 60 changes per simulated minute at 60x: 60 per real second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    let events = answer["data"].as_array().unwrap();
    assert!(events.len() >= 10, "generated {} events", events.len());
    for event in events {
        let action = event["action"].as_str().unwrap();
        assert!(action == "changed" || action == "added", "{event}");
        assert!(event["user"]["gid"].is_string());
        if action == "changed" {
            assert_eq!(event["resource"]["resource_type"], json!("task"));
        } else {
            assert_eq!(event["resource"]["resource_type"], json!("story"));
            assert_eq!(event["parent"]["resource_type"], json!("task"));
        }
    }
    tokio::time::timeout(Duration::from_secs(5), sim.server.shutdown())
        .await
        .expect("the generator stops on shutdown");
}

#[tokio::test]
async fn deleting_a_task_emits_a_deleted_event_and_hides_the_task() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, tasks) = sim.project_with_tasks().await;
    let stream = format!("/events?resource={project}");
    let sync = sim.handshake(&stream).await;
    let (status, body) = sim
        .call(Method::DELETE, &format!("/tasks/{}", tasks[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": {}}));
    let (status, _) = sim.get(&format!("/tasks/{}", tasks[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim
        .call(Method::DELETE, &format!("/tasks/{}", tasks[0]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed = sim.ok(&format!("/projects/{project}/tasks")).await;
    assert!(
        !listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["gid"] == json!(tasks[0]))
    );
    sim.admin_change(&tasks[1], json!({"deleted": true})).await;

    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    let events = answer["data"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{answer}");
    for (event, task) in events.iter().zip(&tasks) {
        assert_eq!(event["action"], json!("deleted"));
        assert_eq!(event["resource"]["gid"], json!(task));
        assert!(event.get("change").is_none());
    }
    sim.server.shutdown().await;
}
