//! The simulator's work-graph endpoints over real HTTP: teams, projects, sections, tasks, stories,
//! status updates, search, custom fields, tags and the batch API, with pagination, `opt_fields`
//! and the error cases Asana documents.

mod support;

use std::collections::BTreeSet;

use asana_worker::sim::config::LimitSpec;
use asana_worker::sim::routes::search::SEARCH_PREMIUM_MESSAGE;
use asana_worker::sim::routes::tasks::TASKS_SELECTOR_MESSAGE;
use asana_worker::sim::wire::OFFSET_EXPIRED_MESSAGE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::sim::{Sim, gids, message, quiet_config};

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn teams_projects_and_sections_answer_their_main_paths_and_errors() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;

    let teams = sim.ok(&format!("/workspaces/{ws}/teams")).await;
    let team = gids(&teams)[0].clone();
    assert_eq!(
        keys(&teams["data"][0]),
        ["gid", "name", "resource_type"].map(String::from).into()
    );
    let full = sim.ok(&format!("/teams/{team}")).await;
    assert_eq!(full["data"]["organization"]["gid"], json!(ws));
    assert!(full["data"]["visibility"].is_string());

    let mine = sim.ok(&format!("/users/me/teams?organization={ws}")).await;
    assert!(
        !gids(&mine).is_empty(),
        "the paid PAT's user belongs to a team"
    );
    let (status, body) = sim.get("/users/me/teams").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&body), "organization: Missing input");

    let team_projects = gids(&sim.ok(&format!("/teams/{team}/projects")).await);
    let by_query = gids(&sim.ok(&format!("/projects?team={team}")).await);
    assert_eq!(team_projects, by_query);
    let all = gids(&sim.ok(&format!("/projects?workspace={ws}")).await);
    assert!(all.len() > team_projects.len());
    assert!(team_projects.iter().all(|p| all.contains(p)));
    let archived = sim
        .ok(&format!(
            "/projects?workspace={ws}&archived=true&opt_fields=archived"
        ))
        .await;
    assert!(
        !gids(&archived).is_empty(),
        "the seeded world archives some"
    );
    assert!(
        archived["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["archived"] == json!(true))
    );
    let live = gids(
        &sim.ok(&format!("/projects?workspace={ws}&archived=false"))
            .await,
    );
    assert_eq!(live.len() + gids(&archived).len(), all.len());
    assert!(live.iter().all(|p| !gids(&archived).contains(p)));
    let (status, _) = sim
        .get(&format!("/projects?workspace={ws}&archived=maybe"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.get("/projects").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a workspace or team is required"
    );

    let project = sim.ok(&format!("/projects/{}", all[0])).await;
    assert_eq!(project["data"]["team"]["resource_type"], json!("team"));
    assert!(project["data"]["custom_field_settings"].is_array());
    let sections = sim.ok(&format!("/projects/{}/sections", all[0])).await;
    let section = gids(&sections)[0].clone();
    let section_full = sim.ok(&format!("/sections/{section}")).await;
    assert_eq!(section_full["data"]["project"]["gid"], json!(all[0]));

    for path in [
        "/teams/1",
        "/projects/1",
        "/sections/1",
        "/workspaces/1/teams",
        "/teams/1/projects",
    ] {
        let (status, body) = sim.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["errors"][0]["message"].is_string());
    }
    sim.server.shutdown().await;
}

#[tokio::test]
async fn pagination_walks_every_page_and_expired_offsets_answer_400() {
    let mut config = quiet_config();
    config.timing.offset_ttl_secs = 30;
    let sim = Sim::start(config).await;
    let project = sim.first_project().await;
    let everything = gids(&sim.ok(&format!("/projects/{project}/tasks")).await);
    assert!(everything.len() > 20);

    let mut walked = Vec::new();
    let mut path = format!("/projects/{project}/tasks?limit=7");
    let mut pages = 0;
    loop {
        let body = sim.ok(&path).await;
        let page = gids(&body);
        assert!(page.len() <= 7);
        walked.extend(page);
        pages += 1;
        match &body["next_page"] {
            Value::Null => break,
            next => {
                let next_path = next["path"].as_str().unwrap();
                assert!(next["uri"].as_str().unwrap().ends_with(next_path));
                assert!(next_path.contains("offset="));
                path = next_path.to_string();
            }
        }
    }
    assert_eq!(walked, everything);
    assert_eq!(pages, everything.len().div_ceil(7));

    let first = sim.ok(&format!("/projects/{project}/tasks?limit=5")).await;
    let offset = first["next_page"]["offset"].as_str().unwrap().to_string();
    let (status, body) = sim
        .get(&format!(
            "/projects/{project}/tasks?limit=5&offset={offset}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sim.admin_api().advance(31).await;
    let (status, body) = sim
        .get(&format!(
            "/projects/{project}/tasks?limit=5&offset={offset}"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&body), OFFSET_EXPIRED_MESSAGE);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn opt_fields_select_dotted_and_parenthesised_paths() {
    let sim = Sim::start(quiet_config()).await;
    let project = sim.first_project().await;
    let tasks = sim
        .ok(&format!("/projects/{project}/tasks?opt_fields=assignee"))
        .await;
    let task = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| !t["assignee"].is_null())
        .expect("an assigned task")["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let body = sim
        .ok(&format!(
            "/tasks/{task}?opt_fields=name,assignee.(name|email),memberships.project.name"
        ))
        .await;
    let data = &body["data"];
    assert_eq!(
        keys(data),
        ["assignee", "gid", "memberships", "name"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        keys(&data["assignee"]),
        ["email", "gid", "name"].map(String::from).into()
    );
    assert!(data["assignee"]["email"].as_str().unwrap().contains('@'));
    assert_eq!(data["memberships"][0]["project"]["gid"], json!(project));
    assert!(data["memberships"][0]["project"]["name"].is_string());
    assert!(data["memberships"][0].get("section").is_none());

    let compact = sim.ok(&format!("/projects/{project}/tasks?limit=1")).await;
    assert_eq!(
        keys(&compact["data"][0]),
        [
            "created_by",
            "gid",
            "name",
            "resource_subtype",
            "resource_type"
        ]
        .map(String::from)
        .into()
    );
    let (status, _) = sim.get(&format!("/tasks/{task}?opt_fields=a.(b")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn get_tasks_requires_one_selector_and_filters_by_time() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let project = sim.first_project().await;
    for path in [
        "/tasks".to_string(),
        "/tasks?assignee=me".to_string(),
        format!("/tasks?workspace={ws}"),
        format!("/tasks?project={project}&assignee=me&workspace={ws}"),
    ] {
        let (status, body) = sim.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(message(&body), TASKS_SELECTOR_MESSAGE);
    }
    let (status, _) = sim.get("/tasks?project=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim
        .get(&format!(
            "/tasks?project={project}&modified_since=yesterday"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let me = sim.ok("/users/me").await["data"]["gid"].clone();
    let mine = sim
        .ok(&format!(
            "/tasks?assignee=me&workspace={ws}&opt_fields=assignee"
        ))
        .await;
    assert!(!gids(&mine).is_empty());
    assert!(
        mine["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["assignee"]["gid"] == me)
    );

    let open = sim
        .ok(&format!(
            "/tasks?project={project}&completed_since=now&opt_fields=completed"
        ))
        .await;
    let all = gids(&sim.ok(&format!("/tasks?project={project}")).await);
    assert!(
        open["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["completed"] == json!(false))
    );
    assert!(
        gids(&open).len() < all.len(),
        "the seeded world has completed tasks"
    );

    let section = gids(&sim.ok(&format!("/projects/{project}/sections")).await)[0].clone();
    let in_section = gids(&sim.ok(&format!("/tasks?section={section}")).await);
    assert_eq!(
        in_section,
        gids(&sim.ok(&format!("/sections/{section}/tasks")).await)
    );
    assert!(in_section.iter().all(|t| all.contains(t)));

    let since = sim.now().await.replace('+', "%2B");
    let path = format!("/tasks?project={project}&modified_since={since}");
    assert!(
        gids(&sim.ok(&path).await).is_empty(),
        "nothing modified yet"
    );
    let target = all[3].clone();
    let (status, _) = sim
        .call(
            Method::PUT,
            &format!("/tasks/{target}"),
            Some(json!({"data": {"name": "Renamed"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gids(&sim.ok(&path).await), vec![target.clone()]);

    let counts = sim
        .ok(&format!(
            "/projects/{project}/tasks?opt_fields=num_subtasks"
        ))
        .await;
    let parent_task = counts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["num_subtasks"].as_u64() > Some(0))
        .expect("a task with subtasks")
        .clone();
    let parent = parent_task["gid"].as_str().unwrap().to_string();
    let (status, body) = sim
        .get(&format!("/tasks/{parent}/subtasks?opt_fields=parent"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        Some(gids(&body).len() as u64),
        parent_task["num_subtasks"].as_u64()
    );
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["parent"]["gid"] == json!(parent))
    );
    sim.server.shutdown().await;
}

#[tokio::test]
async fn put_and_post_tasks_change_the_world_and_validate_input() {
    let sim = Sim::start(quiet_config()).await;
    let project = sim.first_project().await;
    let task = gids(&sim.ok(&format!("/projects/{project}/tasks")).await)[0].clone();
    let before = sim.ok(&format!("/tasks/{task}")).await["data"].clone();
    let users = gids(&sim.ok("/users").await);
    let update = json!({"data": {"name": "New name", "notes": "n", "completed": true,
                                 "assignee": users[4], "due_on": "2030-01-02"}});
    let (status, body) = sim
        .call(Method::PUT, &format!("/tasks/{task}"), Some(update))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = &body["data"];
    assert_eq!(after["name"], json!("New name"));
    assert_eq!(after["completed"], json!(true));
    assert!(after["completed_at"].is_string());
    assert_eq!(after["assignee"]["gid"], json!(users[4]));
    assert_eq!(after["due_on"], json!("2030-01-02"));
    assert!(after["modified_at"].as_str().unwrap() > before["modified_at"].as_str().unwrap());
    let reread = sim.ok(&format!("/tasks/{task}?opt_fields=name")).await;
    assert_eq!(reread["data"], json!({"gid": task, "name": "New name"}));

    for (data, expected) in [
        (json!({"due_on": "tomorrow"}), StatusCode::BAD_REQUEST),
        (json!({"assignee": "1"}), StatusCode::BAD_REQUEST),
        (json!({"completed": "maybe"}), StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = sim
            .call(
                Method::PUT,
                &format!("/tasks/{task}"),
                Some(json!({ "data": data })),
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, _) = sim
        .call(
            Method::PUT,
            &format!("/tasks/{task}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "bodies must be wrapped in data"
    );
    let (status, _) = sim
        .call(
            Method::PUT,
            "/tasks/1",
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body, headers) = sim
        .call_as(
            &sim.token,
            Method::POST,
            "/tasks?opt_fields=name,projects",
            Some(json!({"data": {"name": "Created", "projects": [project]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = body["data"]["gid"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["name"], json!("Created"));
    assert_eq!(body["data"]["projects"][0]["gid"], json!(project));
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/tasks/{created}")
    );
    assert!(gids(&sim.ok(&format!("/projects/{project}/tasks")).await).contains(&created));
    let (status, body) = sim
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"data": {"name": "Options", "projects": [project]},
                        "options": {"fields": ["name"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        keys(&body["data"]),
        ["gid", "name"].map(String::from).into(),
        "body options.fields"
    );
    let (status, body) = sim
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"data": {"name": "Nowhere"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("workspace"));
    let (status, _) = sim
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"data": {"name": "x", "projects": ["1"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn stories_list_create_comments_and_reject_bad_rich_text() {
    let sim = Sim::start(quiet_config()).await;
    let project = sim.first_project().await;
    let task = gids(&sim.ok(&format!("/projects/{project}/tasks")).await)[1].clone();
    let before = sim.ok(&format!("/tasks/{task}/stories")).await;
    let modified_before = sim.ok(&format!("/tasks/{task}")).await["data"]["modified_at"].clone();

    let (status, body, headers) = sim
        .call_as(
            &sim.token,
            Method::POST,
            &format!("/tasks/{task}/stories"),
            Some(json!({"data": {"text": "Plain <comment>"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let story = body["data"]["gid"].as_str().unwrap().to_string();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/stories/{story}")
    );
    assert_eq!(body["data"]["resource_subtype"], json!("comment_added"));
    assert_eq!(
        body["data"]["html_text"],
        json!("<body>Plain &lt;comment&gt;</body>")
    );
    let read = sim.ok(&format!("/stories/{story}")).await;
    assert_eq!(read["data"]["text"], json!("Plain <comment>"));
    assert_eq!(read["data"]["target"]["gid"], json!(task));

    let (status, body) = sim
        .call(
            Method::POST,
            &format!("/tasks/{task}/stories"),
            Some(json!({"data": {"html_text": "<body>Hi <strong>you</strong></body>"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["data"]["text"], json!("Hi you"));

    let after = gids(&sim.ok(&format!("/tasks/{task}/stories")).await);
    assert_eq!(after.len(), gids(&before).len() + 2);
    assert!(after.contains(&story));
    let modified_after = sim.ok(&format!("/tasks/{task}")).await["data"]["modified_at"].clone();
    assert!(
        modified_after.as_str() > modified_before.as_str(),
        "a comment modifies its task"
    );

    for data in [
        json!({"text": "a", "html_text": "<body>a</body>"}),
        json!({"html_text": "no body"}),
        json!({"html_text": "<body><b>unknown tag</b></body>"}),
        json!({"html_text": "<body>unclosed"}),
        json!({}),
    ] {
        let (status, body) = sim
            .call(
                Method::POST,
                &format!("/tasks/{task}/stories"),
                Some(json!({ "data": data })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{data}: {body}");
    }
    let (status, _) = sim
        .call(
            Method::POST,
            "/tasks/1/stories",
            Some(json!({"data": {"text": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim.get("/stories/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn status_updates_validate_type_per_parent_and_list_by_parent() {
    let sim = Sim::start(quiet_config()).await;
    let project = sim.first_project().await;
    let task = gids(&sim.ok(&format!("/projects/{project}/tasks")).await)[0].clone();
    let (status, body, headers) = sim
        .call_as(
            &sim.token,
            Method::POST,
            "/status_updates",
            Some(json!({"data": {"parent": project, "text": "All good", "status_type": "on_track", "title": "Week 1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let update = body["data"]["gid"].as_str().unwrap().to_string();
    assert_eq!(
        body["data"]["resource_subtype"],
        json!("project_status_update")
    );
    assert_eq!(body["data"]["parent"]["gid"], json!(project));
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/status_updates/{update}")
    );

    for (data, why) in [
        (
            json!({"parent": project, "text": "x", "status_type": "achieved"}),
            "goal-only type",
        ),
        (
            json!({"parent": project, "status_type": "on_track"}),
            "no text",
        ),
        (json!({"parent": project, "text": "x"}), "no status_type"),
        (json!({"text": "x", "status_type": "on_track"}), "no parent"),
        (
            json!({"parent": task, "text": "x", "status_type": "on_track"}),
            "a task is no parent",
        ),
        (
            json!({"parent": project, "text": "x", "status_type": "on_track", "html_text": "<i>"}),
            "bad rich text",
        ),
    ] {
        let (status, body) = sim
            .call(
                Method::POST,
                "/status_updates",
                Some(json!({ "data": data })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
    }

    let listed = gids(&sim.ok(&format!("/status_updates?parent={project}")).await);
    assert_eq!(
        listed.last(),
        Some(&update),
        "the new update comes after the seeded ones"
    );
    let (status, body) = sim.get("/status_updates").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&body), "parent: Missing input");
    let future = sim
        .ok(&format!(
            "/status_updates?parent={project}&created_since=2100-01-01T00:00:00Z"
        ))
        .await;
    assert!(gids(&future).is_empty());
    let read = sim.ok(&format!("/status_updates/{update}")).await;
    assert_eq!(read["data"]["status_type"], json!("on_track"));
    assert_eq!(read["data"]["text"], json!("All good"));
    let project_now = sim
        .ok(&format!(
            "/projects/{project}?opt_fields=current_status_update"
        ))
        .await;
    assert_eq!(
        project_now["data"]["current_status_update"]["gid"],
        json!(update)
    );
    let (status, _) = sim.get("/status_updates/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn search_is_premium_only_filters_sorts_and_caps_at_100() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let free = sim.server.token("pat-free").unwrap();
    let (status, body, _) = sim
        .call_as(
            &free,
            Method::GET,
            &format!("/workspaces/{ws}/tasks/search?text=a"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(message(&body), SEARCH_PREMIUM_MESSAGE);

    let base = format!("/workspaces/{ws}/tasks/search");
    let project = sim.first_project().await;
    let name = sim.ok(&format!("/projects/{project}/tasks?limit=1")).await["data"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let word = name.split_whitespace().next().unwrap().to_lowercase();
    let found = sim
        .ok(&format!(
            "{base}?text={word}&limit=100&opt_fields=name,notes"
        ))
        .await;
    assert!(!gids(&found).is_empty());
    assert!(found["data"].as_array().unwrap().iter().all(|t| {
        let text = format!("{} {}", t["name"], t["notes"]).to_lowercase();
        text.contains(&word)
    }));
    assert!(found.get("next_page").is_none(), "search never paginates");

    let me = sim.ok("/users/me").await["data"]["gid"].clone();
    let mine = sim
        .ok(&format!(
            "{base}?assignee.any=me&limit=100&opt_fields=assignee"
        ))
        .await;
    assert!(!gids(&mine).is_empty());
    assert!(
        mine["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["assignee"]["gid"] == me)
    );

    let in_project = sim
        .ok(&format!(
            "{base}?projects.any={project}&completed=false&limit=100&opt_fields=projects,completed"
        ))
        .await;
    assert!(in_project["data"].as_array().unwrap().iter().all(|t| {
        t["completed"] == json!(false)
            && t["projects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["gid"] == json!(project))
    }));

    let sorted = sim
        .ok(&format!(
            "{base}?sort_by=created_at&sort_ascending=true&limit=50&opt_fields=created_at"
        ))
        .await;
    let times: Vec<&str> = sorted["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 50);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    let cutoff = times[25];
    let after = sim
        .ok(&format!("{base}?created_at.after={cutoff}&sort_by=created_at&sort_ascending=true&limit=100&opt_fields=created_at"))
        .await;
    assert!(
        after["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["created_at"].as_str().unwrap() > cutoff)
    );

    let newest = sim
        .ok(&format!("{base}?limit=100&opt_fields=modified_at"))
        .await;
    assert_eq!(gids(&newest).len(), 100);
    let modified: Vec<&str> = newest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["modified_at"].as_str().unwrap())
        .collect();
    assert!(
        modified.windows(2).all(|w| w[0] >= w[1]),
        "default: modified_at descending"
    );

    let (status, _) = sim.get(&format!("{base}?limit=101")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.get(&format!("{base}?sort_by=colour")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.get("/workspaces/1/tasks/search").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn custom_fields_and_tags_answer_their_main_paths() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let project = sim.first_project().await;
    let fields = sim.ok(&format!("/workspaces/{ws}/custom_fields")).await;
    let field_gids = gids(&fields);
    assert!(!field_gids.is_empty());
    let field = sim.ok(&format!("/custom_fields/{}", field_gids[0])).await;
    assert_eq!(field["data"]["resource_type"], json!("custom_field"));
    assert!(field["data"]["description"].is_string());
    let settings = sim
        .ok(&format!("/projects/{project}/custom_field_settings"))
        .await;
    let settings = settings["data"].as_array().unwrap();
    assert_eq!(settings.len(), field_gids.len());
    for setting in settings {
        assert_eq!(setting["resource_type"], json!("custom_field_setting"));
        assert_eq!(setting["project"]["gid"], json!(project));
        assert!(field_gids.contains(&setting["custom_field"]["gid"].as_str().unwrap().to_string()));
    }
    let paged = sim
        .ok(&format!(
            "/projects/{project}/custom_field_settings?limit=1&opt_fields=custom_field.name"
        ))
        .await;
    assert_eq!(paged["data"].as_array().unwrap().len(), 1);
    assert!(paged["data"][0]["custom_field"]["name"].is_string());
    assert!(paged["next_page"]["offset"].is_string());

    let tags = gids(&sim.ok(&format!("/workspaces/{ws}/tags")).await);
    assert!(!tags.is_empty());
    let tag = sim.ok(&format!("/tags/{}", tags[0])).await;
    assert_eq!(tag["data"]["workspace"]["gid"], json!(ws));
    let mut tagged_somewhere = false;
    for tag in &tags {
        let tasks = sim.ok(&format!("/tags/{tag}/tasks?opt_fields=tags")).await;
        for task in tasks["data"].as_array().unwrap() {
            tagged_somewhere = true;
            assert!(
                task["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["gid"] == json!(tag))
            );
        }
    }
    assert!(tagged_somewhere, "the seeded world tags some tasks");
    for path in [
        "/custom_fields/1",
        "/tags/1",
        "/tags/1/tasks",
        "/projects/1/custom_field_settings",
    ] {
        let (status, _) = sim.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    sim.server.shutdown().await;
}

async fn stats_requests(sim: &Sim, name: &str) -> u64 {
    let stats: Value = sim
        .client
        .get(format!("{}/_sim/stats", sim.server.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["tokens"][name]["requests"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn batch_runs_actions_in_order_with_their_own_status_and_counts_as_n() {
    let sim = Sim::start(quiet_config()).await;
    let project = sim.first_project().await;
    let task = gids(&sim.ok(&format!("/projects/{project}/tasks")).await)[0].clone();
    let requests_before = stats_requests(&sim, "pat-paid").await;
    let actions = json!({"data": {"actions": [
        {"relative_path": format!("/tasks/{task}"), "method": "get", "options": {"fields": ["name"]}},
        {"relative_path": "/tasks/1", "method": "get"},
        {"relative_path": format!("/tasks/{task}/stories"), "method": "post", "data": {"text": "from batch"}},
        {"relative_path": "/tasks", "method": "get", "data": {"project": project}, "options": {"limit": 2}},
        {"relative_path": "/organization_exports", "method": "post", "data": {"organization": "1"}},
        {"relative_path": "/batch", "method": "post", "data": {"actions": []}},
    ]}});
    let (status, body) = sim.call(Method::POST, "/batch", Some(actions)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["data"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["status_code"], json!(200));
    assert_eq!(
        results[0]["body"]["data"],
        json!({"gid": task, "name": results[0]["body"]["data"]["name"]})
    );
    assert_eq!(results[1]["status_code"], json!(404));
    assert!(results[1]["body"]["errors"][0]["message"].is_string());
    assert_eq!(results[2]["status_code"], json!(201));
    let story = results[2]["body"]["data"]["gid"].as_str().unwrap();
    assert_eq!(
        results[2]["headers"]["location"],
        json!(format!("/stories/{story}"))
    );
    assert_eq!(results[3]["status_code"], json!(200));
    assert_eq!(results[3]["body"]["data"].as_array().unwrap().len(), 2);
    assert!(results[3]["body"]["next_page"]["offset"].is_string());
    assert_eq!(results[4]["status_code"], json!(400));
    assert_eq!(results[5]["status_code"], json!(400));
    let requests_after = stats_requests(&sim, "pat-paid").await;
    assert_eq!(
        requests_after - requests_before,
        6,
        "a batch of 6 counts as 6 requests"
    );
    assert_eq!(
        sim.ok(&format!("/stories/{story}")).await["data"]["text"],
        json!("from batch")
    );

    let action = json!({"relative_path": "/users/me", "method": "get"});
    for count in [0usize, 11] {
        let body = json!({"data": {"actions": vec![action.clone(); count]}});
        let (status, reply) = sim.call(Method::POST, "/batch", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{count} actions: {reply}");
    }
    let body = json!({"data": {"actions": vec![action.clone(); 10]}});
    let (status, reply) = sim.call(Method::POST, "/batch", Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        reply["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status_code"] == json!(200))
    );
    sim.server.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_would_exceed_the_quota_answers_429_as_a_whole() {
    let mut config = quiet_config();
    config.limits = LimitSpec {
        paid_per_minute: 12,
        ..LimitSpec::default()
    };
    let sim = Sim::start(config).await;
    let action = json!({"relative_path": "/users/me", "method": "get"});
    let body = json!({"data": {"actions": vec![action.clone(); 10]}});
    let (status, reply) = sim.call(Method::POST, "/batch", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // 10 of 12 spent: a batch of 3 does not fit, though the batch request itself would.
    let body = json!({"data": {"actions": vec![action.clone(); 3]}});
    let (status, reply, headers) = sim
        .call_as(&sim.token, Method::POST, "/batch", Some(body))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{reply}");
    assert!(headers.contains_key("retry-after"));
    assert!(reply.get("data").is_none());
    sim.server.shutdown().await;
}

/// Rewrites OpenAPI 3.0 `nullable: true` into JSON Schema's `type: [T, "null"]` so a JSON
/// Schema validator reads the spec as Asana means it.
fn openapi_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let mut nullable = map.remove("nullable") == Some(json!(true));
            // `allOf: [$ref, {nullable: true}]` is how the spec marks nullable references.
            if let Some(Value::Array(parts)) = map.get_mut("allOf") {
                for part in parts.iter_mut() {
                    if let Value::Object(part) = part
                        && part.remove("nullable") == Some(json!(true))
                    {
                        nullable = true;
                    }
                }
            }
            for inner in map.values_mut() {
                openapi_to_json_schema(inner);
            }
            if nullable {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_to_json_schema),
        _ => {}
    }
}

#[tokio::test]
async fn responses_match_the_spec_schemas() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/asana_oas.yaml"))
        .expect("vendored spec");
    let spec: Value = serde_yaml_ng::from_str(&text).expect("spec parses");
    let mut components =
        json!({ "components": { "schemas": spec["components"]["schemas"].clone() } });
    openapi_to_json_schema(&mut components);
    let check = |schema: &str, value: &Value, what: &str| {
        let mut root = components.clone();
        root["$ref"] = json!(format!("#/components/schemas/{schema}"));
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not match {schema}: {errors:?}\n{value}"
        );
    };

    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let project = sim.first_project().await;
    let tasks = sim.ok(&format!("/projects/{project}/tasks")).await;
    for task in tasks["data"].as_array().unwrap().iter().take(3) {
        check("TaskCompact", task, "a task in a list");
    }
    let task = tasks["data"][0]["gid"].as_str().unwrap().to_string();
    check(
        "TaskResponse",
        &sim.ok(&format!("/tasks/{task}")).await["data"],
        "a task",
    );
    check(
        "ProjectResponse",
        &sim.ok(&format!("/projects/{project}")).await["data"],
        "a project",
    );
    let team = sim.ok(&format!("/workspaces/{ws}/teams")).await["data"][0]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    check(
        "TeamResponse",
        &sim.ok(&format!("/teams/{team}")).await["data"],
        "a team",
    );
    let section = sim.ok(&format!("/projects/{project}/sections")).await["data"][0]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    check(
        "SectionResponse",
        &sim.ok(&format!("/sections/{section}")).await["data"],
        "a section",
    );
    let (_, story) = sim
        .call(
            Method::POST,
            &format!("/tasks/{task}/stories"),
            Some(json!({"data": {"text": "hello"}})),
        )
        .await;
    check("StoryResponse", &story["data"], "a new story");
    for story in sim.ok(&format!("/tasks/{task}/stories")).await["data"]
        .as_array()
        .unwrap()
    {
        check("StoryCompact", story, "a story in a list");
    }
    let (_, update) = sim
        .call(
            Method::POST,
            "/status_updates",
            Some(json!({"data": {"parent": project, "text": "t", "status_type": "at_risk"}})),
        )
        .await;
    check("StatusUpdateResponse", &update["data"], "a status update");
    let tag = sim.ok(&format!("/workspaces/{ws}/tags")).await["data"][0]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    check(
        "TagResponse",
        &sim.ok(&format!("/tags/{tag}")).await["data"],
        "a tag",
    );
    for field in sim.ok(&format!("/workspaces/{ws}/custom_fields")).await["data"]
        .as_array()
        .unwrap()
    {
        check("CustomFieldCompact", field, "a custom field in a list");
        let gid = field["gid"].as_str().unwrap();
        check(
            "CustomFieldResponse",
            &sim.ok(&format!("/custom_fields/{gid}")).await["data"],
            "a custom field",
        );
    }
    for setting in sim
        .ok(&format!("/projects/{project}/custom_field_settings"))
        .await["data"]
        .as_array()
        .unwrap()
    {
        check(
            "CustomFieldSettingResponse",
            setting,
            "a custom field setting",
        );
    }
    let user = sim.ok("/users/me").await["data"]["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = sim
        .get(&format!("/users/{user}/teams?organization={ws}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    sim.server.shutdown().await;
}
