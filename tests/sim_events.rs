//! The simulator's Events API over real HTTP: the 412 handshake, repeatable answers, the 100 and
//! 1,000 event caps with `has_more`, token expiry in simulated time and on demand, events
//! bubbling up from tasks to their projects, the events of every kind of change, lost events,
//! `modified_since` after changes, random changes, and the background activity generator.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use asana_worker::sim::routes::events::SYNC_INVALID_MESSAGE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::sim::{Sim, gids, quiet_config, with_sync};

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
    config.timing.sync_token_ttl_secs = 60;
    let sim = Sim::start(config).await;
    let (_, _, tasks) = sim.project_with_tasks().await;
    let stream = format!("/events?resource={}", tasks[0]);
    let sync = sim.handshake(&stream).await;
    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    let next = answer["sync"].as_str().unwrap().to_string();
    sim.admin_api().advance(61).await;
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

/// Reads a stream from `sync` until caught up; the events.
async fn drain(sim: &Sim, stream: &str, sync: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut sync = sync.to_string();
    loop {
        let answer = sim.ok(&with_sync(stream, &sync)).await;
        events.extend(answer["data"].as_array().unwrap().iter().cloned());
        sync = answer["sync"].as_str().unwrap().to_string();
        if answer["has_more"] != json!(true) {
            return events;
        }
    }
}

/// An event as (action, resource gid, parent gid, change field, change action).
fn summary(event: &Value) -> (String, String, String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&event["action"]),
        text(&event["resource"]["gid"]),
        text(&event["parent"]["gid"]),
        text(&event["change"]["field"]),
        text(&event["change"]["action"]),
    )
}

fn row(
    action: &str,
    resource: &str,
    parent: &str,
    field: &str,
    change: &str,
) -> (String, String, String, String, String) {
    (
        action.into(),
        resource.into(),
        parent.into(),
        field.into(),
        change.into(),
    )
}

#[tokio::test]
async fn every_kind_of_change_records_the_events_asana_sends() {
    let sim = Sim::start(quiet_config()).await;
    let (ws, project, _) = sim.project_with_tasks().await;
    let (a, b, first_section, other_section, tag, follower, away) = {
        let world = sim.server.state().world();
        let sections: Vec<String> = world
            .sections
            .within(&project)
            .map(|s| s.gid.clone())
            .collect();
        let in_project: Vec<_> = world
            .tasks
            .iter()
            .filter(|t| t.parent.is_none() && t.in_project(&project))
            .collect();
        let a = in_project
            .iter()
            .find(|t| t.dependencies.is_empty() && t.dependents.is_empty())
            .unwrap();
        let b = in_project
            .iter()
            .find(|t| t.gid != a.gid && t.dependencies.is_empty())
            .unwrap();
        let current = &a.memberships[0].1;
        let other_section = sections.iter().find(|s| *s != current).unwrap().clone();
        let tag = world
            .tags
            .iter()
            .find(|t| !a.has_tag(&t.gid))
            .unwrap()
            .gid
            .clone();
        let follower = world
            .users
            .iter()
            .find(|u| !a.followers.contains(&u.gid))
            .unwrap()
            .gid
            .clone();
        let other_project = world.projects.at(1).unwrap().gid.clone();
        let away = world
            .sections
            .within(&other_project)
            .next()
            .unwrap()
            .gid
            .clone();
        (
            a.gid.clone(),
            b.gid.clone(),
            sections[0].clone(),
            other_section,
            tag,
            follower,
            away,
        )
    };
    let project_stream = format!("/events?resource={project}");
    let workspace_stream = format!("/workspaces/{ws}/events");
    let project_sync = sim.handshake(&project_stream).await;
    let workspace_sync = sim.handshake(&workspace_stream).await;

    let applied = sim
        .mutate(json!([
            {"kind": "create_task", "section": first_section, "name": "Created"},
            {"kind": "move_task", "task": a, "section": other_section},
            {"kind": "add_tag", "task": a, "tag": tag},
            {"kind": "add_follower", "task": a, "follower": follower},
            {"kind": "add_dependency", "task": a, "blocker": b},
            {"kind": "comment", "task": a, "text": "a comment"},
            {"kind": "attach", "parent": a, "name": "plan.pdf"},
            {"kind": "log_time", "task": a, "minutes": 30},
            {"kind": "create_section", "project": project, "name": "Later"},
            {"kind": "rename_section", "section": first_section, "name": "Renamed section"},
            {"kind": "rename_project", "project": project, "name": "Renamed project"},
            {"kind": "archive_project", "project": project, "archived": true},
            {"kind": "delete_task", "task": b},
            {"kind": "undelete_task", "task": b},
            {"kind": "remove_from_project", "task": a, "project": project},
            {"kind": "move_task", "task": a, "section": away},
        ]))
        .await;
    assert_eq!(applied.len(), 16);
    assert!(
        applied.iter().all(|o| o["changed"] == json!(true)),
        "{applied:?}"
    );
    let created = |i: usize| applied[i]["created"].as_str().unwrap().to_string();
    let (new_task, story, attachment, new_section) =
        (created(0), created(5), created(6), created(8));

    let events = drain(&sim, &project_stream, &project_sync).await;
    let got: Vec<_> = events.iter().map(summary).collect();
    let want = vec![
        row("added", &new_task, &project, "", ""),
        row("added", &new_task, &first_section, "", ""),
        row("added", &a, &other_section, "", ""),
        row("changed", &a, "", "tags", "added"),
        row("changed", &a, "", "followers", "added"),
        row("changed", &a, "", "dependencies", "added"),
        row("changed", &b, "", "dependents", "added"),
        row("added", &story, &a, "", ""),
        row("added", &attachment, &a, "", ""),
        row("changed", &a, "", "actual_time_minutes", "changed"),
        row("added", &new_section, &project, "", ""),
        row("changed", &first_section, "", "name", "changed"),
        row("changed", &project, "", "name", "changed"),
        row("changed", &project, "", "archived", "changed"),
        row("deleted", &b, "", "", ""),
        row("undeleted", &b, "", "", ""),
        row("removed", &a, &project, "", ""),
    ];
    assert_eq!(got, want);
    assert_eq!(events[3]["change"]["added_value"]["gid"], json!(tag));
    assert_eq!(events[4]["change"]["added_value"]["gid"], json!(follower));
    assert_eq!(events[5]["change"]["added_value"]["gid"], json!(b));
    assert_eq!(events[7]["resource"]["resource_type"], json!("story"));
    assert_eq!(events[8]["resource"]["resource_type"], json!("attachment"));
    assert_eq!(events[8]["resource"]["name"], json!("plan.pdf"));
    assert_eq!(events[10]["resource"]["resource_type"], json!("section"));
    assert_eq!(events[13]["change"]["new_value"], json!(true));
    assert!(events.iter().all(|e| e["user"]["gid"].is_string()));

    // The task left the project: its last move reaches the workspace stream, not the project's.
    let everything: Vec<_> = drain(&sim, &workspace_stream, &workspace_sync)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(everything[..want.len()], want[..]);
    assert_eq!(everything.len(), want.len() + 2);
    assert_eq!(everything[want.len() + 1].2, away);
    sim.server.shutdown().await;
}

/// Every task `GET /tasks?project=&modified_since=` returns, page by page.
async fn modified_since(sim: &Sim, project: &str, since: &str) -> BTreeSet<String> {
    let since = since.replace('+', "%2B");
    let base = format!("/tasks?project={project}&modified_since={since}&limit=100");
    let mut found = BTreeSet::new();
    let mut path = base.clone();
    loop {
        let page = sim.ok(&path).await;
        found.extend(gids(&page));
        match page["next_page"]["offset"].as_str() {
            Some(offset) => path = format!("{base}&offset={offset}"),
            None => return found,
        }
    }
}

#[tokio::test]
async fn modified_since_finds_exactly_the_tasks_changed_since() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, tasks) = sim.project_with_tasks().await;
    let t = &tasks;
    let (tag, section) = {
        let world = sim.server.state().world();
        let tag = world
            .tags
            .iter()
            .find(|g| !world.tasks.get(&t[1]).unwrap().has_tag(&g.gid));
        let current = &world.tasks.get(&t[4]).unwrap().memberships[0].1;
        let section = world.sections.within(&project).find(|s| &s.gid != current);
        (tag.unwrap().gid.clone(), section.unwrap().gid.clone())
    };
    let before = sim.now().await;
    sim.admin_ok("/clock", json!({"advance_secs": 10})).await;
    let since = sim.now().await;
    let applied = sim
        .mutate(json!([
            {"kind": "rename_task", "task": t[0], "name": "Renamed"},
            {"kind": "add_tag", "task": t[1], "tag": tag},
            {"kind": "comment", "task": t[2], "text": "noted"},
            {"kind": "attach", "parent": t[3], "name": "notes.txt"},
            {"kind": "move_task", "task": t[4], "section": section},
            {"kind": "create_subtask", "parent": t[5], "name": "A step"},
            {"kind": "add_dependency", "task": t[6], "blocker": t[7]},
            {"kind": "log_time", "task": t[8], "minutes": 45},
        ]))
        .await;
    assert!(
        applied.iter().all(|o| o["changed"] == json!(true)),
        "{applied:?}"
    );
    let changed: BTreeSet<String> = t[..9].iter().cloned().collect();
    assert_eq!(modified_since(&sim, &project, &since).await, changed);
    assert_eq!(
        modified_since(&sim, &project, &before).await,
        changed,
        "the seeded history is older than the simulator's start"
    );

    // Millisecond precision, inclusive: a task modified at T is returned for T, not for T+1 ms.
    let at = sim
        .ok(&format!("/tasks/{}?opt_fields=modified_at", t[0]))
        .await["data"]["modified_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(modified_since(&sim, &project, &at).await.contains(&t[0]));
    let instant =
        chrono::DateTime::parse_from_rfc3339(&at).unwrap() + chrono::Duration::milliseconds(1);
    let after = instant.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    assert!(!modified_since(&sim, &project, &after).await.contains(&t[0]));

    sim.admin_ok("/clock", json!({"advance_secs": 10})).await;
    let later = sim.now().await;
    assert!(modified_since(&sim, &project, &later).await.is_empty());
    sim.server.shutdown().await;
}

#[tokio::test]
async fn lost_events_never_arrive_though_their_changes_are_made() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, tasks) = sim.project_with_tasks().await;
    let stream = format!("/events?resource={project}");
    let sync = sim.handshake(&stream).await;
    sim.faults(json!({"drop_events": 1.0})).await;
    sim.mutate(json!([{"kind": "rename_task", "task": tasks[0], "name": "Lost rename"}]))
        .await;
    let answer = sim.ok(&with_sync(&stream, &sync)).await;
    assert_eq!(answer["data"], json!([]), "the event is lost");
    let task = sim.ok(&format!("/tasks/{}", tasks[0])).await;
    assert_eq!(
        task["data"]["name"],
        json!("Lost rename"),
        "the change is not"
    );
    let (_, counters) = sim.admin(Method::GET, "/events", None).await;
    assert_eq!(counters["lost"], json!(1));

    sim.faults(json!({"drop_events": 0.5})).await;
    let renames: Vec<Value> = (0..200)
        .map(
            |i| json!({"kind": "rename_task", "task": tasks[i % 5], "name": format!("Rename {i}")}),
        )
        .collect();
    sim.mutate(Value::Array(renames)).await;
    let delivered = drain(&sim, &stream, answer["sync"].as_str().unwrap())
        .await
        .len();
    assert!(
        (60..140).contains(&delivered),
        "{delivered} of 200 delivered at 50% loss"
    );
    let (_, counters) = sim.admin(Method::GET, "/events", None).await;
    assert_eq!(counters["lost"], json!(1 + 200 - delivered));

    let (status, _) = sim
        .admin(Method::PUT, "/faults", Some(json!({"drop_events": 2.0})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn an_admin_can_expire_the_sync_tokens_of_one_stream() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, tasks) = sim.project_with_tasks().await;
    let project_stream = format!("/events?resource={project}");
    let task_stream = format!("/events?resource={}", tasks[0]);
    let first = sim.handshake(&project_stream).await;
    let next = sim.ok(&with_sync(&project_stream, &first)).await["sync"]
        .as_str()
        .unwrap()
        .to_string();
    let task_sync = sim.handshake(&task_stream).await;

    let expired = sim
        .admin_ok("/events/expire", json!({"resource": project}))
        .await;
    assert_eq!(
        expired["expired"],
        json!(2),
        "both tokens of the project stream"
    );
    let (status, body) = sim.get(&with_sync(&project_stream, &next)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(body["errors"][0]["message"], json!(SYNC_INVALID_MESSAGE));
    let fresh = body["sync"].as_str().unwrap();
    assert_ne!(fresh, next);
    sim.ok(&with_sync(&project_stream, fresh)).await;
    sim.ok(&with_sync(&task_stream, &task_sync)).await;

    let (status, _) = sim
        .admin(
            Method::POST,
            "/events/expire",
            Some(json!({"resource": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn random_changes_are_seeded_reported_and_recorded() {
    let sim = Sim::start(quiet_config()).await;
    let twin = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let stream = format!("/workspaces/{ws}/events");
    let sync = sim.handshake(&stream).await;
    let request = json!({"seed": 11, "count": 60});
    let applied = sim.admin_ok("/mutate", request.clone()).await["applied"].clone();
    let again = twin.admin_ok("/mutate", request).await["applied"].clone();
    assert_eq!(
        applied, again,
        "the same seed on the same world makes the same changes"
    );
    let applied = applied.as_array().unwrap();
    assert_eq!(applied.len(), 60);
    let kinds: BTreeSet<&str> = applied
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.len() >= 8, "varied changes: {kinds:?}");
    {
        let world = sim.server.state().world();
        for created in applied.iter().filter_map(|o| o["created"].as_str()) {
            assert!(world.kind_of(created).is_some(), "{created} exists");
        }
    }
    let changed = applied
        .iter()
        .filter(|o| o["changed"] == json!(true))
        .count();
    let events = drain(&sim, &stream, &sync).await;
    assert!(
        events.len() >= changed,
        "{} events for {changed} changes",
        events.len()
    );

    let (status, body) = sim
        .admin(
            Method::POST,
            "/mutate",
            Some(json!({"changes": [
                {"kind": "rename_task", "task": applied_task(applied), "name": "ok"},
                {"kind": "rename_task", "task": "1", "name": "no such task"},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"1\""));
    assert_eq!(body["applied"].as_array().unwrap().len(), 1);
    let (status, _) = sim
        .admin(
            Method::POST,
            "/mutate",
            Some(json!({"changes": [{"kind": "fly"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    twin.server.shutdown().await;
    sim.server.shutdown().await;
}

/// A live task some outcome names.
fn applied_task(applied: &[Value]) -> String {
    applied
        .iter()
        .filter(|o| o["kind"] == json!("rename_task"))
        .find_map(|o| o["task"].as_str())
        .expect("a rename among the random changes")
        .to_string()
}
