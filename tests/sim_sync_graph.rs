//! The simulator's work graph as a sync mirrors it, over real HTTP: team and project
//! memberships, archived projects, task relations (dependencies, subtasks, projects, tags),
//! portfolios, goals, attachments, time tracking, the free tier's 402s, projects a token may not
//! access (403), and worlds sized for benchmarks. Every 200 answer is validated against Asana's
//! OpenAPI spec, and each list is compared with the seeded world it should show.

mod support;

use std::collections::BTreeSet;

use asana_worker::sim::config::{SimConfig, TokenSpec};
use asana_worker::sim::routes::read::{
    DEPENDENCIES_PREMIUM, GOALS_PREMIUM, NO_ACCESS_MESSAGE, PORTFOLIOS_PREMIUM,
    TIME_TRACKING_PREMIUM,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::sim::{Sim, gid, gids, message, quiet_config};
use support::spec::spec;

const SA: &str = "service-account";
const PAID: &str = "pat-paid";
const FREE: &str = "pat-free";

/// `GET path` as the token named `token`, which must answer 200 with a body the spec accepts.
async fn conforming(sim: &Sim, token: &str, path: &str) -> Value {
    let (status, body) = sim.get_as(token, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path} as {token}: {body}");
    let report = spec().check("GET", path, 200, &body);
    assert!(
        report.problems.is_empty(),
        "GET {path}: {:#?}",
        report.problems
    );
    body
}

/// `GET path` as `token`, which must answer `status` with Asana's error body; its message.
async fn refused(sim: &Sim, token: &str, path: &str, status: StatusCode) -> String {
    let (got, body) = sim.get_as(token, path).await;
    assert_eq!(got, status, "GET {path} as {token}: {body}");
    let text = message(&body);
    assert!(!text.is_empty(), "GET {path}: no error message in {body}");
    text
}

fn set(items: Vec<String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

#[tokio::test]
async fn teams_list_their_members_and_memberships_under_every_name() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let teams = conforming(&sim, SA, &format!("/workspaces/{ws}/teams")).await;
    let (status, legacy) = sim.get(&format!("/organizations/{ws}/teams")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(legacy, teams, "the organizations path is the same list");
    refused(&sim, SA, "/organizations/1/teams", StatusCode::NOT_FOUND).await;

    for team in gids(&teams) {
        let users = gids(&conforming(&sim, SA, &format!("/teams/{team}/users")).await);
        let memberships = conforming(&sim, SA, &format!("/teams/{team}/team_memberships")).await;
        let members: Vec<String> = memberships["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| gid(&m["user"]))
            .collect();
        assert_eq!(users, members);
        assert!(memberships["data"][0]["is_admin"].is_boolean());
        let by_query = conforming(&sim, SA, &format!("/team_memberships?team={team}")).await;
        assert_eq!(by_query, memberships);
        let via_users = gids(&conforming(&sim, SA, &format!("/users?team={team}")).await);
        assert_eq!(set(via_users), set(users.clone()));
        let one = gid(&memberships["data"][0]);
        let full = conforming(&sim, SA, &format!("/team_memberships/{one}")).await;
        assert_eq!(full["data"]["team"]["gid"], json!(team));
        assert_eq!(full["data"]["resource_type"], json!("team_membership"));
    }

    let me = gid(&sim.ok("/users/me").await["data"]);
    let mine = conforming(
        &sim,
        PAID,
        &format!("/users/me/team_memberships?workspace={ws}"),
    )
    .await;
    assert!(!gids(&mine).is_empty());
    assert!(
        mine["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["user"]["gid"] == json!(me))
    );
    let by_user = conforming(
        &sim,
        PAID,
        &format!("/team_memberships?user=me&workspace={ws}"),
    )
    .await;
    assert_eq!(by_user, mine);
    let teams_of_me = gids(&sim.ok(&format!("/users/me/teams?organization={ws}")).await);
    let membership_teams: Vec<String> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| gid(&m["team"]))
        .collect();
    assert_eq!(teams_of_me, membership_teams);

    for path in [
        "/team_memberships".to_string(),
        "/team_memberships?user=me".to_string(),
        "/users/me/team_memberships".to_string(),
    ] {
        refused(&sim, PAID, &path, StatusCode::BAD_REQUEST).await;
    }
    refused(&sim, PAID, "/team_memberships/1", StatusCode::NOT_FOUND).await;
    refused(&sim, PAID, "/teams/1/users", StatusCode::NOT_FOUND).await;
    sim.server.shutdown().await;
}

#[tokio::test]
async fn project_memberships_match_the_projects_members_and_the_memberships_api() {
    let sim = Sim::start(quiet_config()).await;
    let (_, project, _) = sim.project_with_tasks().await;
    let members = sim
        .ok(&format!("/projects/{project}?opt_fields=members"))
        .await;
    let members: Vec<String> = members["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(gid)
        .collect();
    let list = conforming(
        &sim,
        SA,
        &format!("/projects/{project}/project_memberships"),
    )
    .await;
    let users: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| gid(&m["member"]))
        .collect();
    assert_eq!(users, members);
    let levels: BTreeSet<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["access_level"].as_str().unwrap())
        .collect();
    assert!(
        levels.contains("admin"),
        "the owner administers: {levels:?}"
    );

    let one = gid(&list["data"][0]);
    let full = conforming(&sim, SA, &format!("/project_memberships/{one}")).await;
    assert_eq!(full["data"]["project"]["gid"], json!(project));
    assert_eq!(full["data"]["user"]["gid"], json!(users[0]));
    assert!(full["data"]["write_access"].is_string());
    let filtered = conforming(
        &sim,
        SA,
        &format!("/projects/{project}/project_memberships?user={}", users[0]),
    )
    .await;
    assert_eq!(gids(&filtered), vec![one.clone()]);

    let generic = conforming(&sim, SA, &format!("/memberships?parent={project}")).await;
    assert_eq!(gids(&generic), gids(&list));
    assert!(
        generic["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["resource_type"] == json!("membership")
                && m["resource_subtype"] == json!("project_membership"))
    );
    let of_member = conforming(
        &sim,
        SA,
        &format!("/memberships?parent={project}&member={}", users[0]),
    )
    .await;
    assert_eq!(gids(&of_member), vec![one.clone()]);
    let generic_one = conforming(&sim, SA, &format!("/memberships/{one}")).await;
    assert_eq!(generic_one["data"]["parent"]["gid"], json!(project));
    let team = gid(&sim.ok(&format!("/projects/{project}")).await["data"]["team"]);
    let by_team = conforming(
        &sim,
        SA,
        &format!("/memberships?member={team}&resource_subtype=project_membership"),
    )
    .await;
    assert_eq!(
        by_team["data"],
        json!([]),
        "projects are shared with users, not teams"
    );

    let task = gids(&sim.ok(&format!("/projects/{project}/tasks")).await)[0].clone();
    refused(&sim, SA, "/memberships", StatusCode::BAD_REQUEST).await;
    refused(
        &sim,
        SA,
        &format!("/memberships?parent={task}"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused(&sim, SA, "/memberships?parent=1", StatusCode::NOT_FOUND).await;
    refused(&sim, SA, "/project_memberships/1", StatusCode::NOT_FOUND).await;
    sim.server.shutdown().await;
}

#[tokio::test]
async fn archived_projects_are_flagged_and_every_project_list_filters_them() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let archived = gids(
        &conforming(
            &sim,
            SA,
            &format!("/workspaces/{ws}/projects?archived=true"),
        )
        .await,
    );
    let archived_in_world: Vec<String> = sim
        .server
        .state()
        .world()
        .projects
        .iter()
        .filter(|p| p.archived)
        .map(|p| p.gid.clone())
        .collect();
    assert!(!archived.is_empty());
    assert_eq!(archived, archived_in_world);
    let python_spelling = gids(
        &sim.ok(&format!("/projects?workspace={ws}&archived=True"))
            .await,
    );
    assert_eq!(
        python_spelling, archived,
        "Asana's Python client sends `True`"
    );
    let project = sim.ok(&format!("/projects/{}", archived[0])).await;
    assert_eq!(project["data"]["archived"], json!(true));
    let team = gid(&project["data"]["team"]);
    let team_archived =
        gids(&conforming(&sim, SA, &format!("/teams/{team}/projects?archived=true")).await);
    assert!(team_archived.contains(&archived[0]));
    let team_live =
        gids(&conforming(&sim, SA, &format!("/teams/{team}/projects?archived=false")).await);
    assert!(!team_live.contains(&archived[0]));
    let tasks = conforming(
        &sim,
        SA,
        &format!("/projects/{}/tasks?limit=5", archived[0]),
    )
    .await;
    assert!(
        !gids(&tasks).is_empty(),
        "an archived project keeps its tasks"
    );
    sim.server.shutdown().await;
}

#[tokio::test]
async fn task_relations_agree_with_the_tasks_fields() {
    let sim = Sim::start(quiet_config()).await;
    let (blocked, blocker) = {
        let world = sim.server.state().world();
        let task = world
            .tasks
            .iter()
            .find(|t| !t.dependencies.is_empty())
            .expect("the world has a dependency");
        (task.gid.clone(), task.dependencies[0].clone())
    };
    let fields = sim
        .ok(&format!(
            "/tasks/{blocked}?opt_fields=dependencies,dependents,projects,tags,followers,num_subtasks"
        ))
        .await["data"]
        .clone();
    let listed = |field: &str| -> Vec<String> {
        fields[field].as_array().unwrap().iter().map(gid).collect()
    };
    let dependencies = gids(&conforming(&sim, SA, &format!("/tasks/{blocked}/dependencies")).await);
    assert_eq!(dependencies, listed("dependencies"));
    assert!(dependencies.contains(&blocker));
    let dependents = gids(&conforming(&sim, SA, &format!("/tasks/{blocker}/dependents")).await);
    assert!(dependents.contains(&blocked));
    assert_eq!(
        gids(&conforming(&sim, SA, &format!("/tasks/{blocked}/projects")).await),
        listed("projects")
    );
    assert_eq!(
        gids(&conforming(&sim, SA, &format!("/tasks/{blocked}/tags")).await),
        listed("tags")
    );
    assert!(
        !listed("followers").is_empty(),
        "creators follow their tasks"
    );
    let subtasks = gids(&conforming(&sim, SA, &format!("/tasks/{blocked}/subtasks")).await);
    assert_eq!(json!(subtasks.len()), fields["num_subtasks"]);

    for path in [
        format!("/tasks/{blocked}/dependencies"),
        format!("/tasks/{blocker}/dependents"),
    ] {
        let text = refused(&sim, FREE, &path, StatusCode::PAYMENT_REQUIRED).await;
        assert_eq!(text, DEPENDENCIES_PREMIUM);
    }
    refused(&sim, SA, "/tasks/1/dependencies", StatusCode::NOT_FOUND).await;
    sim.server.shutdown().await;
}

#[tokio::test]
async fn portfolios_are_listed_by_owner_and_hold_their_teams_projects() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let all = conforming(&sim, SA, &format!("/portfolios?workspace={ws}")).await;
    let all = gids(&all);
    let world_portfolios: Vec<(String, String, Vec<String>)> = sim
        .server
        .state()
        .world()
        .portfolios
        .iter()
        .map(|p| (p.gid.clone(), p.owner.clone(), p.items.clone()))
        .collect();
    assert_eq!(
        all.len(),
        world_portfolios.len(),
        "a service account sees all"
    );
    let me = gid(&sim.ok("/users/me").await["data"]);
    let mine = gids(&conforming(&sim, PAID, &format!("/portfolios?workspace={ws}")).await);
    let owned: Vec<String> = world_portfolios
        .iter()
        .filter(|(_, owner, _)| *owner == me)
        .map(|(gid, _, _)| gid.clone())
        .collect();
    assert!(!owned.is_empty());
    assert_eq!(mine, owned, "a PAT sees the portfolios its user owns");
    let (first, owner, items) = world_portfolios[0].clone();
    let by_owner = gids(
        &conforming(
            &sim,
            SA,
            &format!("/portfolios?workspace={ws}&owner={owner}"),
        )
        .await,
    );
    assert!(by_owner.contains(&first));
    let someone_else = world_portfolios
        .iter()
        .find(|(_, o, _)| *o != me)
        .map(|(_, o, _)| o.clone())
        .unwrap();
    let not_mine = conforming(
        &sim,
        PAID,
        &format!("/portfolios?workspace={ws}&owner={someone_else}"),
    )
    .await;
    assert_eq!(not_mine["data"], json!([]));

    let full = conforming(&sim, SA, &format!("/portfolios/{first}")).await;
    assert_eq!(full["data"]["owner"]["gid"], json!(owner));
    assert!(full["data"]["current_status_update"]["gid"].is_string());
    let listed_items = gids(&conforming(&sim, SA, &format!("/portfolios/{first}/items")).await);
    assert_eq!(listed_items, items);

    let memberships = conforming(
        &sim,
        SA,
        &format!("/portfolios/{first}/portfolio_memberships"),
    )
    .await;
    let member_gids: Vec<String> = memberships["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| gid(&m["user"]))
        .collect();
    assert!(member_gids.contains(&owner));
    let members_field: Vec<String> = full["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(gid)
        .collect();
    assert_eq!(member_gids, members_field);
    let by_portfolio = conforming(
        &sim,
        SA,
        &format!("/portfolio_memberships?portfolio={first}"),
    )
    .await;
    assert_eq!(by_portfolio, memberships);
    let of_owner = conforming(
        &sim,
        SA,
        &format!("/portfolio_memberships?workspace={ws}&user={owner}"),
    )
    .await;
    assert!(!gids(&of_owner).is_empty());
    let one = gid(&memberships["data"][0]);
    let membership = conforming(&sim, SA, &format!("/portfolio_memberships/{one}")).await;
    assert_eq!(membership["data"]["portfolio"]["gid"], json!(first));
    let generic = conforming(&sim, SA, &format!("/memberships?parent={first}")).await;
    assert_eq!(gids(&generic), gids(&memberships));

    refused(&sim, SA, "/portfolios", StatusCode::BAD_REQUEST).await;
    refused(&sim, SA, "/portfolio_memberships", StatusCode::BAD_REQUEST).await;
    refused(&sim, SA, "/portfolios/1", StatusCode::NOT_FOUND).await;
    for path in [
        format!("/portfolios?workspace={ws}"),
        format!("/portfolios/{first}"),
        format!("/portfolios/{first}/items"),
        format!("/portfolios/{first}/portfolio_memberships"),
        format!("/portfolio_memberships?portfolio={first}"),
        format!("/portfolio_memberships/{one}"),
        format!("/memberships?parent={first}"),
    ] {
        let text = refused(&sim, FREE, &path, StatusCode::PAYMENT_REQUIRED).await;
        assert_eq!(text, PORTFOLIOS_PREMIUM, "{path}");
    }
    sim.server.shutdown().await;
}

#[tokio::test]
async fn goals_are_found_by_workspace_team_and_what_supports_them() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let goals = gids(&conforming(&sim, SA, &format!("/goals?workspace={ws}")).await);
    let (top, team_goal, team, project, task, portfolio) = {
        let world = sim.server.state().world();
        assert_eq!(goals.len(), world.goals.len());
        let top = world.goals.iter().find(|g| g.team.is_none()).unwrap();
        let team_goal = world.goals.iter().find(|g| g.team.is_some()).unwrap();
        let project = team_goal
            .supporting
            .iter()
            .find(|s| world.kind_of(s) == Some("project"))
            .unwrap();
        let task = team_goal
            .supporting
            .iter()
            .find(|s| world.kind_of(s) == Some("task"))
            .unwrap();
        let portfolio = top
            .supporting
            .iter()
            .find(|s| world.kind_of(s) == Some("portfolio"))
            .unwrap();
        (
            top.gid.clone(),
            team_goal.gid.clone(),
            team_goal.team.clone().unwrap(),
            project.clone(),
            task.clone(),
            portfolio.clone(),
        )
    };
    let workspace_level = gids(
        &conforming(
            &sim,
            SA,
            &format!("/goals?workspace={ws}&is_workspace_level=true"),
        )
        .await,
    );
    assert_eq!(workspace_level, vec![top.clone()]);
    assert_eq!(
        gids(&conforming(&sim, SA, &format!("/goals?team={team}")).await),
        vec![team_goal.clone()]
    );
    for supporter in [&project, &task] {
        let kind = if *supporter == project {
            "project"
        } else {
            "task"
        };
        let found = gids(&conforming(&sim, SA, &format!("/goals?{kind}={supporter}")).await);
        assert_eq!(found, vec![team_goal.clone()], "{kind}");
    }
    let by_portfolio = gids(&conforming(&sim, SA, &format!("/goals?portfolio={portfolio}")).await);
    assert_eq!(by_portfolio, vec![top.clone()]);
    let full = conforming(&sim, SA, &format!("/goals/{team_goal}")).await;
    assert_eq!(full["data"]["team"]["gid"], json!(team));
    assert_eq!(full["data"]["is_workspace_level"], json!(false));
    assert!(full["data"]["status"].is_string());
    assert_eq!(full["data"]["metric"]["unit"], json!("percentage"));
    let parents = gids(&conforming(&sim, SA, &format!("/goals/{team_goal}/parentGoals")).await);
    assert_eq!(parents, vec![top.clone()]);
    let updates = conforming(&sim, SA, &format!("/status_updates?parent={team_goal}")).await;
    let update = gid(&updates["data"][0]);
    let update = conforming(&sim, SA, &format!("/status_updates/{update}")).await;
    assert_eq!(
        update["data"]["resource_subtype"],
        json!("goal_status_update")
    );
    assert_eq!(
        full["data"]["current_status_update"]["gid"],
        update["data"]["gid"]
    );

    refused(&sim, SA, "/goals", StatusCode::BAD_REQUEST).await;
    refused(
        &sim,
        SA,
        "/goals?is_workspace_level=true",
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused(&sim, SA, "/goals/1", StatusCode::NOT_FOUND).await;
    for path in [
        format!("/goals?workspace={ws}"),
        format!("/goals/{team_goal}"),
        format!("/status_updates?parent={team_goal}"),
        format!("/events?resource={team_goal}"),
    ] {
        let text = refused(&sim, FREE, &path, StatusCode::PAYMENT_REQUIRED).await;
        assert_eq!(text, GOALS_PREMIUM, "{path}");
    }
    sim.server.shutdown().await;
}

#[tokio::test]
async fn attachments_of_tasks_and_projects_carry_their_metadata() {
    let sim = Sim::start(quiet_config()).await;
    let (task, project, uploaded) = {
        let world = sim.server.state().world();
        let on_task = world
            .attachments
            .iter()
            .find(|a| world.kind_of(&a.parent) == Some("task"))
            .unwrap();
        let on_project = world
            .attachments
            .iter()
            .find(|a| world.kind_of(&a.parent) == Some("project"))
            .unwrap();
        let uploaded = world
            .attachments
            .iter()
            .find(|a| a.host == "asana")
            .unwrap();
        (
            on_task.parent.clone(),
            on_project.parent.clone(),
            uploaded.gid.clone(),
        )
    };
    let listed = conforming(&sim, SA, &format!("/attachments?parent={task}")).await;
    assert!(!gids(&listed).is_empty());
    for attachment in gids(&listed) {
        let full = conforming(&sim, SA, &format!("/attachments/{attachment}")).await;
        let data = &full["data"];
        assert_eq!(data["parent"]["gid"], json!(task));
        assert!(data["size"].as_u64().unwrap() > 0);
        assert_eq!(data["host"], data["resource_subtype"]);
        assert!(data["download_url"].is_null(), "metadata only");
        assert!(data["view_url"].as_str().unwrap().starts_with("https://"));
    }
    let uploaded = conforming(&sim, SA, &format!("/attachments/{uploaded}")).await;
    assert!(uploaded["data"]["permanent_url"].is_string());
    let key_resources = conforming(&sim, SA, &format!("/attachments?parent={project}")).await;
    assert!(!gids(&key_resources).is_empty());

    let ws = sim.workspace().await;
    refused(&sim, SA, "/attachments", StatusCode::BAD_REQUEST).await;
    refused(
        &sim,
        SA,
        &format!("/attachments?parent={ws}"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused(&sim, SA, "/attachments?parent=1", StatusCode::NOT_FOUND).await;
    refused(&sim, SA, "/attachments/1", StatusCode::NOT_FOUND).await;
    sim.server.shutdown().await;
}

#[tokio::test]
async fn time_tracking_entries_add_up_to_the_tasks_actual_time() {
    let sim = Sim::start(quiet_config()).await;
    let ws = sim.workspace().await;
    let (task, user, project) = {
        let world = sim.server.state().world();
        let entry = world.time_entries.at(0).expect("time was logged");
        (
            entry.task.clone(),
            entry.created_by.clone(),
            entry.attributable_to.clone().unwrap(),
        )
    };
    let entries = conforming(&sim, SA, &format!("/tasks/{task}/time_tracking_entries")).await;
    let total: u64 = entries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["duration_minutes"].as_u64().unwrap())
        .sum();
    let actual = sim
        .ok(&format!("/tasks/{task}?opt_fields=actual_time_minutes"))
        .await;
    assert_eq!(actual["data"]["actual_time_minutes"], json!(total));
    let first = gid(&entries["data"][0]);
    let full = conforming(&sim, SA, &format!("/time_tracking_entries/{first}")).await;
    assert_eq!(full["data"]["task"]["gid"], json!(task));
    assert_eq!(full["data"]["attributable_to"]["gid"], json!(project));
    let entered_on = full["data"]["entered_on"].as_str().unwrap().to_string();

    let by_task = conforming(&sim, SA, &format!("/time_tracking_entries?task={task}")).await;
    assert_eq!(gids(&by_task), gids(&entries));
    let by_project = gids(
        &conforming(
            &sim,
            SA,
            &format!("/time_tracking_entries?attributable_to={project}"),
        )
        .await,
    );
    assert!(by_project.contains(&first));
    let by_user_that_day = gids(
        &conforming(
            &sim,
            SA,
            &format!(
                "/time_tracking_entries?user={user}&entered_on_start_date={entered_on}&entered_on_end_date={entered_on}"
            ),
        )
        .await,
    );
    assert!(by_user_that_day.contains(&first));
    let in_workspace = gids(
        &conforming(
            &sim,
            SA,
            &format!("/time_tracking_entries?workspace={ws}&entered_on_start_date=2000-01-01"),
        )
        .await,
    );
    assert_eq!(
        in_workspace.len(),
        sim.server.state().world().time_entries.len()
    );

    refused(&sim, SA, "/time_tracking_entries", StatusCode::BAD_REQUEST).await;
    refused(
        &sim,
        SA,
        &format!("/time_tracking_entries?workspace={ws}"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    for path in [
        format!("/tasks/{task}/time_tracking_entries"),
        format!("/time_tracking_entries/{first}"),
        format!("/time_tracking_entries?task={task}"),
    ] {
        let text = refused(&sim, FREE, &path, StatusCode::PAYMENT_REQUIRED).await;
        assert_eq!(text, TIME_TRACKING_PREMIUM, "{path}");
    }
    sim.server.shutdown().await;
}

#[tokio::test]
async fn a_forbidden_project_stays_listed_but_answers_403() {
    let mut config = quiet_config();
    let mut tokens = SimConfig::default_tokens();
    tokens.push(TokenSpec {
        name: "pat-limited".into(),
        forbidden_projects: vec![0],
        ..tokens[1].clone()
    });
    tokens[3].secret = None;
    config.tokens = tokens;
    let sim = Sim::start(config).await;
    let ws = sim.workspace().await;
    let (project, other, section, task, status_update) = {
        let world = sim.server.state().world();
        let project = world.projects.at(0).unwrap().gid.clone();
        let other = world.projects.at(1).unwrap().gid.clone();
        let section = world.sections.within(&project).next().unwrap().gid.clone();
        let task = world
            .tasks
            .iter()
            .find(|t| t.memberships.len() == 1 && t.in_project(&project))
            .unwrap()
            .gid
            .clone();
        let updates = world.status_updates.within(&project).count();
        (project, other, section, task, updates)
    };
    assert!(status_update > 0, "the first project has status updates");
    let listed = gids(
        &sim.get_as("pat-limited", &format!("/projects?workspace={ws}"))
            .await
            .1,
    );
    assert!(listed.contains(&project), "still listed");
    let forbidden = [
        format!("/projects/{project}"),
        format!("/projects/{project}/tasks"),
        format!("/tasks?project={project}&modified_since=2000-01-01T00:00:00Z"),
        format!("/projects/{project}/sections"),
        format!("/sections/{section}"),
        format!("/sections/{section}/tasks"),
        format!("/tasks/{task}"),
        format!("/projects/{project}/project_memberships"),
        format!("/status_updates?parent={project}"),
        format!("/attachments?parent={project}"),
        format!("/events?resource={project}"),
    ];
    for path in &forbidden {
        let text = refused(&sim, "pat-limited", path, StatusCode::FORBIDDEN).await;
        assert_eq!(text, NO_ACCESS_MESSAGE);
        let (status, _) = sim.get_as(PAID, path).await;
        assert_ne!(
            status,
            StatusCode::FORBIDDEN,
            "{path} is open to other tokens"
        );
    }
    conforming(&sim, "pat-limited", &format!("/projects/{other}")).await;

    // At runtime: forbid the other project to the paid PAT, then lift it.
    let (status, _) = sim
        .admin(
            Method::PUT,
            "/tokens/pat-paid/forbidden_projects",
            Some(json!({"projects": [other]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    refused(
        &sim,
        PAID,
        &format!("/projects/{other}"),
        StatusCode::FORBIDDEN,
    )
    .await;
    let (_, tokens) = sim.admin(Method::GET, "/tokens", None).await;
    let paid = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!(PAID))
        .unwrap()
        .clone();
    assert_eq!(paid["forbidden_projects"], json!([other]));
    sim.admin(
        Method::PUT,
        "/tokens/pat-paid/forbidden_projects",
        Some(json!({"projects": []})),
    )
    .await;
    conforming(&sim, PAID, &format!("/projects/{other}")).await;
    let (status, _) = sim
        .admin(
            Method::PUT,
            "/tokens/nobody/forbidden_projects",
            Some(json!({"projects": []})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim
        .admin(
            Method::PUT,
            "/tokens/pat-paid/forbidden_projects",
            Some(json!({"projects": ["1"]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.server.shutdown().await;
}

#[tokio::test]
async fn worlds_are_sized_by_projects_and_tasks_per_project_and_seeded() {
    let mut config = quiet_config();
    config.world.projects = 500;
    config.world.tasks_per_project = 100;
    config.world.max_subtasks = 0;
    config.world.max_stories = 0;
    let sim = Sim::start(config.clone()).await;
    let ws = sim.workspace().await;
    {
        let world = sim.server.state().world();
        assert_eq!(world.projects.len(), 500);
        assert_eq!(world.tasks.len(), 50_000);
    }
    let mut projects = Vec::new();
    let mut path = format!("/projects?workspace={ws}&limit=100");
    loop {
        let page = sim.ok(&path).await;
        projects.extend(gids(&page));
        match page["next_page"]["offset"].as_str() {
            Some(offset) => path = format!("/projects?workspace={ws}&limit=100&offset={offset}"),
            None => break,
        }
    }
    assert_eq!(projects.len(), 500);
    let last = projects.last().unwrap();
    let tasks = gids(&sim.ok(&format!("/projects/{last}/tasks")).await);
    assert_eq!(tasks.len(), 100);

    // The same seed and size make the same world, gid for gid.
    let twin = Sim::start(config).await;
    assert_eq!(
        gids(&twin.ok(&format!("/projects/{last}/tasks")).await),
        tasks
    );
    twin.server.shutdown().await;
    sim.server.shutdown().await;
}

#[tokio::test]
async fn the_new_routes_sit_behind_the_limits_and_faults() {
    let mut config = quiet_config();
    config.limits.paid_per_minute = 3;
    let sim = Sim::start(config).await;
    let ws = sim.workspace().await;
    sim.faults(json!({"error_503": 1.0})).await;
    refused(
        &sim,
        SA,
        &format!("/goals?workspace={ws}"),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    sim.faults(json!({})).await;
    let mut statuses = Vec::new();
    for path in ["/portfolios", "/team_memberships", "/attachments"] {
        let (status, _) = sim.get(&format!("{path}?workspace={ws}")).await;
        statuses.push(status.as_u16());
    }
    // The paid quota of 3 a minute was spent by /workspaces and the first two calls.
    assert_eq!(statuses[2], 429, "{statuses:?}");
    sim.server.shutdown().await;
}
