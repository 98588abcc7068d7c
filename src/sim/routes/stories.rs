//! Stories: `GET /tasks/{gid}/stories`, `POST /tasks/{gid}/stories` (comments only, from `text`
//! or `html_text`) and `GET /stories/{gid}`; plus the rich-text check Asana applies to `html_*`
//! fields (well-formed XML wrapped in `<body>`, known tags only).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;

use super::support::{body_bool, body_string, created_object, read_body};
use super::{Params, events, paginate, single};
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/tasks/{task_gid}/stories",
            get(task_stories).post(create_story),
        )
        .route("/stories/{story_gid}", get(story))
}

async fn task_stories(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.tasks.get(&task_gid).is_none_or(|t| t.deleted) {
        return Err(ApiError::not_found("task"));
    }
    let gids: Vec<String> = world
        .stories
        .iter()
        .filter(|s| s.target == task_gid)
        .map(|s| s.gid.clone())
        .collect();
    let path = format!("/tasks/{task_gid}/stories");
    paginate(&state, &world, &path, &params, &gids)
}

async fn story(
    State(state): State<SharedState>,
    Path(story_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.stories.get(&story_gid).is_none() {
        return Err(ApiError::not_found("story"));
    }
    single(&world, &story_gid, &params, "story")
}

async fn create_story(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut params = Params::parse(query)?;
    if state.world().tasks.get(&task_gid).is_none_or(|t| t.deleted) {
        return Err(ApiError::not_found("task"));
    }
    let data = read_body(&body, &mut params)?;
    let text = match (
        body_string(&data, "text")?,
        body_string(&data, "html_text")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "You may only provide one of text or html_text",
            ));
        }
        (Some(text), None) => text,
        (None, Some(html)) => rich_text_to_plain(&html, "html_text")?,
        (None, None) => return Err(ApiError::bad_request("text: Missing input")),
    };
    let is_pinned = body_bool(&data, "is_pinned")?.unwrap_or(false);
    let gid = events::comment_on_task(&state, &task_gid, &caller.record.user_gid, &text, is_pinned)
        .ok_or_else(|| ApiError::not_found("task"))?;
    let world = state.world();
    created_object(&world, &gid, &params, &format!("/stories/{gid}"))
}

/// Tags Asana accepts in rich text (its rich-text guide), plus the `<body>` root.
const RICH_TEXT_TAGS: &[&str] = &[
    "body",
    "strong",
    "em",
    "u",
    "s",
    "code",
    "ol",
    "ul",
    "li",
    "a",
    "blockquote",
    "pre",
    "h1",
    "h2",
    "hr",
    "img",
    "table",
    "tr",
    "td",
    "object",
];

/// Checks Asana rich text (`<body>…</body>`, well-formed, known tags) and returns its plain text.
/// Invalid input is a 400 naming `field`, as Asana answers.
pub fn rich_text_to_plain(html: &str, field: &str) -> Result<String, ApiError> {
    parse_rich_text(html).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: Rich text is not valid: it must be well-formed XML wrapped in a <body> tag, \
             using only supported tags"
        ))
    })
}

/// A minimal XML well-formedness check for rich text; `None` when invalid.
fn parse_rich_text(html: &str) -> Option<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut rest = html.trim();
    let mut seen_root = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after)?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim();
                if stack.pop().as_deref() != Some(name) {
                    return None;
                }
                if stack.is_empty() {
                    // The root closed: only whitespace may follow.
                    return rest.trim().is_empty().then_some(text);
                }
                continue;
            }
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let name: String = inner.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty() || !RICH_TEXT_TAGS.contains(&name.as_str()) {
                return None;
            }
            check_attributes(&inner[name.len()..])?;
            if stack.is_empty() {
                if seen_root || name != "body" {
                    return None;
                }
                seen_root = true;
            } else if name == "body" {
                return None;
            }
            if self_closing {
                if stack.is_empty() {
                    return rest.trim().is_empty().then_some(text);
                }
            } else {
                stack.push(name);
            }
        } else {
            if stack.is_empty() {
                return None;
            }
            let end = rest.find('<').unwrap_or(rest.len());
            text.push_str(&unescape(&rest[..end])?);
            rest = &rest[end..];
        }
    }
    None
}

/// Position of the `>` closing a tag, skipping quoted attribute values.
fn tag_end(after: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in after.char_indices() {
        match (quote, c) {
            (None, '>') => return Some(i),
            (None, '<') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    None
}

/// Attributes must be `name="value"` pairs.
fn check_attributes(mut rest: &str) -> Option<()> {
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(());
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:".contains(c))
        {
            return None;
        }
        let value = rest[eq + 1..].trim_start();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = value[1..].find(quote)?;
        unescape(&value[1..1 + close])?;
        rest = &value[close + 2..];
    }
}

/// Resolves XML entities; `None` on a bare `&` or an unknown entity.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        let ch = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_text_must_be_wrapped_well_formed_and_known() {
        assert_eq!(
            parse_rich_text("<body>Hi <strong>there</strong> &amp; all</body>").as_deref(),
            Some("Hi there & all")
        );
        assert_eq!(
            parse_rich_text(r#"<body><a href="https://x.test/?a=1&amp;b=2">l</a><hr/></body>"#)
                .as_deref(),
            Some("l")
        );
        for bad in [
            "plain text",
            "<p>not body</p>",
            "<body>unclosed",
            "<body><strong>crossed</body></strong>",
            "<body>a & b</body>",
            "<body><script>x</script></body>",
            "<body>a</body><body>b</body>",
            "<body>x</body> trailing",
        ] {
            assert!(parse_rich_text(bad).is_none(), "{bad} should be rejected");
        }
    }
}
