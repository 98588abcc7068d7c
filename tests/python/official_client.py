"""Drives Asana's official Python client (PyPI `asana`, unchanged) against the simulator.

Run by tests/official_client.rs. Inputs come from environment variables (never argv, so tokens
stay out of process listings):

  ASANA_SIM_BASE_URL    http://127.0.0.1:PORT/api/1.0
  ASANA_SIM_TOKEN       a service-account token (enterprise, paid)
  ASANA_SIM_FREE_TOKEN  a free-tier PAT (optional)
  ASANA_SIM_PROJECT     gid of a project with more than one page of tasks
  ASANA_SIM_TASK        gid of a task in that project
  ASANA_SIM_ATTACHED_TASK  gid of a task with attachments
  ASANA_SIM_TIMED_TASK     gid of a task with time logged
  ASANA_SIM_BLOCKED_TASK   gid of a task with dependencies

Each step runs on its own; the script always exits 0 and prints one JSON object on its last
stdout line: {"client_version": ..., "steps": {name: {"status": "ok"|"failed"|"not_implemented",
"error": ..., ...facts}}}. The Rust test asserts on those facts.
"""

import gzip
import importlib.metadata
import io
import itertools
import json
import os
import sys
import time
import traceback
import urllib.request

import asana
from asana.rest import ApiException

NO_ROUTE = "No matching route for request"


class NotImplementedInSim(Exception):
    """The simulator has no route for a request this step needs."""


def make_client(token):
    configuration = asana.Configuration()
    configuration.host = os.environ["ASANA_SIM_BASE_URL"]
    configuration.access_token = token
    return asana.ApiClient(configuration)


def error_body(exc):
    try:
        return json.loads(exc.body.decode("utf-8"))
    except Exception:  # noqa: BLE001 - a body we cannot parse is reported as is
        return {"raw": repr(exc.body)}


def run_step(steps, name, func, requires=None):
    """Runs one step, recording its facts or why it failed. A step that `requires` another one
    inherits that step's not-implemented status instead of failing on a missing input."""
    if requires is not None:
        before = steps.get(requires, {}).get("status", "missing")
        if before != "ok":
            status = "not_implemented" if before == "not_implemented" else "failed"
            steps[name] = {"status": status, "error": f"needs step {requires!r}, which is {before}"}
            return
    try:
        facts = func() or {}
        steps[name] = {"status": "ok", **facts}
    except NotImplementedInSim as exc:
        steps[name] = {"status": "not_implemented", "error": str(exc)}
    except ApiException as exc:
        body = error_body(exc)
        message = ((body.get("errors") or [{}])[0] or {}).get("message", "")
        if exc.status == 404 and message == NO_ROUTE:
            steps[name] = {"status": "not_implemented", "error": f"404 {NO_ROUTE}"}
        else:
            steps[name] = {
                "status": "failed",
                "error": f"ApiException {exc.status}: {json.dumps(body)[:500]}",
            }
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none aborts the run
        steps[name] = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc()[-1500:],
        }


def main():
    client = make_client(os.environ["ASANA_SIM_TOKEN"])
    project = os.environ["ASANA_SIM_PROJECT"]
    task_gid = os.environ["ASANA_SIM_TASK"]
    context = {}
    steps = {}

    def workspaces():
        found = list(asana.WorkspacesApi(client).get_workspaces({"opt_fields": "name,is_organization"}))
        context["workspace"] = found[0]["gid"]
        return {"gids": [w["gid"] for w in found], "names": [w.get("name") for w in found]}

    def me():
        user = asana.UsersApi(client).get_user("me", {"opt_fields": "name,email"})
        return {"gid": user["gid"], "email": user.get("email")}

    def users():
        # limit=5 makes the client's PageIterator follow next_page over several pages.
        found = list(
            asana.UsersApi(client).get_users(
                {"workspace": context["workspace"], "limit": 5, "opt_fields": "name,email"}
            )
        )
        return {"gids": [u["gid"] for u in found], "emails": [u.get("email") for u in found]}

    def project_tasks():
        found = list(
            asana.TasksApi(client).get_tasks_for_project(
                project, {"limit": 10, "opt_fields": "name,completed,modified_at"}
            )
        )
        return {"gids": [t["gid"] for t in found]}

    def tasks_by_project_item_limit():
        # item_limit stops the iterator early; the client shrinks the last page's limit.
        found = list(
            asana.TasksApi(client).get_tasks({"project": project, "limit": 10}, item_limit=25)
        )
        return {"gids": [t["gid"] for t in found]}

    def get_task():
        found = asana.TasksApi(client).get_task(
            task_gid, {"opt_fields": "name,assignee.email,memberships.section.name,custom_fields.name"}
        )
        return {"gid": found["gid"], "name": found.get("name")}

    def audit_log():
        # The client's PageIterator never ends on this endpoint (next_page is always present),
        # so page by hand until `data` is empty, as Asana's docs say.
        api = asana.AuditLogAPIApi(client)
        opts = {"limit": 100}
        gids = []
        pages = 0
        saw_next_page_on_empty = None
        while True:
            pages += 1
            if pages > 500:
                raise RuntimeError("audit log did not run dry after 500 pages")
            page = api.get_audit_log_events(context["workspace"], dict(opts), full_payload=True)
            data = page.get("data") or []
            if not data:
                saw_next_page_on_empty = page.get("next_page") is not None
                break
            gids.extend(event["gid"] for event in data)
            next_page = page.get("next_page")
            if not next_page:
                raise RuntimeError("next_page missing on a non-empty audit log page")
            opts["offset"] = next_page["offset"]
        return {
            "count": len(gids),
            "unique": len(set(gids)),
            "pages": pages,
            "next_page_on_empty_page": saw_next_page_on_empty,
        }

    def audit_log_item_limit():
        found = list(
            asana.AuditLogAPIApi(client).get_audit_log_events(
                context["workspace"], {"limit": 50}, item_limit=120
            )
        )
        return {"count": len(found)}

    def organization_export():
        api = asana.OrganizationExportsApi(client)
        created = api.create_organization_export({"data": {"organization": context["workspace"]}}, {})
        export_gid = created["gid"]
        states = [created.get("state")]
        deadline = time.monotonic() + 60
        current = created
        while current.get("state") not in ("finished", "error"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"export still {current.get('state')} after 60 s")
            time.sleep(0.2)
            current = api.get_organization_export(export_gid, {})
            if current.get("state") != states[-1]:
                states.append(current.get("state"))
        if current.get("state") != "finished":
            raise RuntimeError(f"export ended in state {current.get('state')}")
        url = current.get("download_url")
        if not url:
            raise RuntimeError("finished export has no download_url")
        with urllib.request.urlopen(url, timeout=30) as response:
            raw = response.read()
        gzip_magic = raw[:2] == b"\x1f\x8b"
        text = gzip.GzipFile(fileobj=io.BytesIO(raw)).read().decode("utf-8")
        try:
            parsed = json.loads(text)
            shape = "json"
            records = len(parsed) if isinstance(parsed, (list, dict)) else 1
        except json.JSONDecodeError:
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            shape = "jsonl"
            records = len(lines)
        return {
            "gid": export_gid,
            "states": states,
            "gzip_magic": gzip_magic,
            "format": shape,
            "records": records,
            "bytes": len(raw),
        }

    def events_412():
        api = asana.EventsApi(client)
        try:
            api.get_events(project, {}, full_payload=True)
        except ApiException as exc:
            if exc.status != 412:
                raise
            body = error_body(exc)
            context["sync"] = body.get("sync")
            return {
                "status_code": exc.status,
                "sync": body.get("sync"),
                "message": ((body.get("errors") or [{}])[0] or {}).get("message"),
            }
        raise RuntimeError("GET /events without a sync token did not raise 412")

    def events_after_write():
        sync = context.get("sync")
        if not sync:
            raise RuntimeError("no sync token from the 412 step")
        asana.StoriesApi(client).create_story_for_task(
            {"data": {"text": "Comment from the official client test"}}, task_gid, {}
        )
        api = asana.EventsApi(client)
        result = api.get_events(project, {"sync": sync}, full_payload=True)
        events = list(result.get("data") or [])
        next_sync = result.get("sync")
        while result.get("has_more"):
            result = api.get_events(project, {"sync": next_sync}, full_payload=True)
            events.extend(result.get("data") or [])
            next_sync = result.get("sync")
        return {
            "count": len(events),
            "next_sync": next_sync,
            "has_more_field": "has_more" in result,
            "resource_types": sorted({(e.get("resource") or {}).get("resource_type", "?") for e in events}),
        }

    def events_iterator():
        # The client's own EventIterator swallows the 412, retries with the new token and stops
        # when has_more is false. Nothing happened on the task since, so it yields nothing.
        iterator = asana.EventsApi(client).get_events(task_gid, {})
        items = list(itertools.islice(iterator, 1000))
        return {"items": len(items)}

    def status_update():
        api = asana.StatusUpdatesApi(client)
        created = api.create_status_for_object(
            {
                "data": {
                    "parent": project,
                    "status_type": "on_track",
                    "title": "Official client",
                    "text": "Created by tests/python/official_client.py",
                }
            },
            {},
        )
        listed = [s["gid"] for s in api.get_statuses_for_object(project, {})]
        return {
            "gid": created["gid"],
            "status_type": created.get("status_type"),
            "resource_subtype": created.get("resource_subtype"),
            "listed": created["gid"] in listed,
        }

    def team_memberships():
        teams = list(asana.TeamsApi(client).get_teams_for_workspace(context["workspace"], {}))
        team = teams[0]["gid"]
        memberships = list(
            asana.TeamMembershipsApi(client).get_team_memberships_for_team(
                team, {"limit": 2, "opt_fields": "user,is_admin"}
            )
        )
        users = list(asana.UsersApi(client).get_users_for_team(team, {}))
        return {
            "team": team,
            "members": [m["user"]["gid"] for m in memberships],
            "users": [u["gid"] for u in users],
        }

    def project_memberships():
        found = list(
            asana.ProjectMembershipsApi(client).get_project_memberships_for_project(
                project, {"limit": 3, "opt_fields": "member,access_level"}
            )
        )
        return {
            "members": [m["member"]["gid"] for m in found],
            "access_levels": [m["access_level"] for m in found],
        }

    def archived_projects():
        # The client sends booleans as Python spells them (`True`), which Asana accepts.
        found = list(
            asana.ProjectsApi(client).get_projects_for_workspace(
                context["workspace"], {"archived": True, "opt_fields": "archived"}
            )
        )
        return {"gids": [p["gid"] for p in found], "flags": [p["archived"] for p in found]}

    def portfolios():
        api = asana.PortfoliosApi(client)
        found = list(api.get_portfolios(context["workspace"], {"limit": 2}))
        first = found[0]["gid"]
        items = list(api.get_items_for_portfolio(first, {}))
        members = list(
            asana.PortfolioMembershipsApi(client).get_portfolio_memberships_for_portfolio(
                first, {"opt_fields": "user,access_level"}
            )
        )
        return {
            "gids": [p["gid"] for p in found],
            "items": [i["gid"] for i in items],
            "members": [m["user"]["gid"] for m in members],
        }

    def goals():
        api = asana.GoalsApi(client)
        found = list(api.get_goals({"workspace": context["workspace"]}))
        goal = api.get_goal(found[0]["gid"], {"opt_fields": "name,team,status,metric"})
        return {"gids": [g["gid"] for g in found], "goal_status": goal.get("status")}

    def attachments():
        api = asana.AttachmentsApi(client)
        found = list(api.get_attachments_for_object(os.environ["ASANA_SIM_ATTACHED_TASK"], {}))
        first = api.get_attachment(found[0]["gid"], {})
        return {
            "gids": [a["gid"] for a in found],
            "parent": first["parent"]["gid"],
            "host": first.get("host"),
        }

    def time_tracking():
        found = list(
            asana.TimeTrackingEntriesApi(client).get_time_tracking_entries_for_task(
                os.environ["ASANA_SIM_TIMED_TASK"], {"opt_fields": "duration_minutes"}
            )
        )
        return {"minutes": sum(e["duration_minutes"] for e in found), "count": len(found)}

    def dependencies():
        found = list(
            asana.TasksApi(client).get_dependencies_for_task(
                os.environ["ASANA_SIM_BLOCKED_TASK"], {}
            )
        )
        return {"gids": [t["gid"] for t in found]}

    def premium_only():
        free = make_client(os.environ["ASANA_SIM_FREE_TOKEN"])
        try:
            list(asana.GoalsApi(free).get_goals({"workspace": context["workspace"]}))
        except ApiException as exc:
            body = error_body(exc)
            return {"status_code": exc.status, "message": body["errors"][0]["message"]}
        raise RuntimeError("a free token listed goals")

    def not_found():
        try:
            asana.UsersApi(client).get_user("9999999999", {})
        except ApiException as exc:
            body = error_body(exc)
            return {"status_code": exc.status, "message": body["errors"][0]["message"]}
        raise RuntimeError("unknown user did not raise")

    def unauthorized():
        bad = make_client("0/not-a-real-token")
        try:
            asana.UsersApi(bad).get_user("me", {})
        except ApiException as exc:
            body = error_body(exc)
            return {"status_code": exc.status, "message": body["errors"][0]["message"]}
        raise RuntimeError("a bogus token did not raise")

    run_step(steps, "workspaces", workspaces)
    run_step(steps, "me", me)
    run_step(steps, "users", users, requires="workspaces")
    run_step(steps, "project_tasks", project_tasks)
    run_step(steps, "tasks_item_limit", tasks_by_project_item_limit)
    run_step(steps, "task", get_task)
    run_step(steps, "audit_log", audit_log, requires="workspaces")
    run_step(steps, "audit_log_item_limit", audit_log_item_limit, requires="workspaces")
    run_step(steps, "organization_export", organization_export, requires="workspaces")
    run_step(steps, "events_412", events_412)
    run_step(steps, "events_after_write", events_after_write, requires="events_412")
    run_step(steps, "events_iterator", events_iterator)
    run_step(steps, "status_update", status_update)
    run_step(steps, "team_memberships", team_memberships, requires="workspaces")
    run_step(steps, "project_memberships", project_memberships)
    run_step(steps, "archived_projects", archived_projects, requires="workspaces")
    run_step(steps, "portfolios", portfolios, requires="workspaces")
    run_step(steps, "goals", goals, requires="workspaces")
    run_step(steps, "attachments", attachments)
    run_step(steps, "time_tracking", time_tracking)
    run_step(steps, "dependencies", dependencies)
    run_step(steps, "premium_only", premium_only, requires="workspaces")
    run_step(steps, "not_found", not_found)
    run_step(steps, "unauthorized", unauthorized)

    print(
        json.dumps(
            {
                "client_version": importlib.metadata.version("asana"),
                "python": sys.version.split()[0],
                "steps": steps,
            }
        )
    )


if __name__ == "__main__":
    main()
