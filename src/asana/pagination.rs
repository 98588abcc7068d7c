//! Offset pagination as async streams. Pages follow `next_page.offset` with the original query.
//! Two stop rules: the usual one (no `next_page`), and the audit log's (caught up when `data` is
//! empty, because Asana always returns a `next_page` there). When an offset expires mid-walk
//! (a 400 naming `offset:`), a caller-supplied fallback may restart the walk from a filter such
//! as `modified_since` or `start_at`, given the last item seen.

use futures::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{ApiRequest, AsanaClient, Query};
use super::error::AsanaError;
use crate::budget::RequestClass;

/// Largest page Asana serves.
pub const MAX_PAGE_SIZE: u32 = 100;

/// After this many expired offsets in a row without a page in between, the fallback is not
/// consulted again (it would loop forever).
const MAX_FALLBACKS_IN_A_ROW: u32 = 3;

/// When a walk is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRule {
    /// When a page has no `next_page` (every list endpoint but the audit log).
    NoNextPage,
    /// When a page's `data` is empty (the audit log: `next_page` is always present).
    EmptyData,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// The offset of the next page: what a checkpoint stores to resume later.
    pub next_offset: Option<String>,
    /// Whether this page starts a walk restarted by the offset fallback, so items may repeat
    /// ones already seen (deduplicate by gid).
    pub restarted: bool,
}

/// Restarts a walk after its offset expired: given the last item seen (if any), returns the query
/// to start over with (offset removed), or `None` to give up with
/// [`AsanaError::OffsetExpired`].
pub type OffsetFallback<T> = Box<dyn FnMut(Option<&T>) -> Option<Query> + Send>;

/// A list walk, built by the typed methods; turn it into a stream with [`ListWalk::pages`] or
/// [`ListWalk::items`].
pub struct ListWalk<T> {
    client: AsanaClient,
    path: String,
    query: Query,
    class: RequestClass,
    stop: StopRule,
    start_offset: Option<String>,
    fallback: Option<OffsetFallback<T>>,
}

impl<T> std::fmt::Debug for ListWalk<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListWalk")
            .field("path", &self.path)
            .field("query", &self.query)
            .field("stop", &self.stop)
            .finish()
    }
}

struct WalkState<T> {
    walk: ListWalk<T>,
    offset: Option<String>,
    last: Option<T>,
    restarted: bool,
    fallbacks_in_a_row: u32,
    done: bool,
}

impl<T> ListWalk<T>
where
    T: DeserializeOwned + Clone + Send + 'static,
{
    /// A walk over `path` with `query` (a `limit` of 100 is added when absent).
    pub fn new(client: AsanaClient, path: impl Into<String>, mut query: Query) -> Self {
        if query.get("limit").is_none() {
            query.set("limit", MAX_PAGE_SIZE.to_string());
        }
        Self {
            client,
            path: path.into(),
            query,
            class: RequestClass::Read,
            stop: StopRule::NoNextPage,
            start_offset: None,
            fallback: None,
        }
    }

    /// Uses another stop rule.
    pub fn stop_rule(mut self, stop: StopRule) -> Self {
        self.stop = stop;
        self
    }

    /// Starts at a stored offset (a checkpoint) instead of the first page.
    pub fn from_offset(mut self, offset: Option<String>) -> Self {
        self.start_offset = offset;
        self
    }

    /// Sets the page size (1..=100).
    pub fn page_size(mut self, limit: u32) -> Self {
        self.query
            .set("limit", limit.clamp(1, MAX_PAGE_SIZE).to_string());
        self
    }

    /// What to do when an offset expires mid-walk.
    pub fn on_offset_expired(
        mut self,
        fallback: impl FnMut(Option<&T>) -> Option<Query> + Send + 'static,
    ) -> Self {
        self.fallback = Some(Box::new(fallback));
        self
    }

    /// The pages, in order. Ends after the last page, or after the first error.
    pub fn pages(self) -> impl Stream<Item = Result<Page<T>, AsanaError>> + Send + 'static {
        let offset = self.start_offset.clone();
        let state = WalkState {
            walk: self,
            offset,
            last: None,
            restarted: false,
            fallbacks_in_a_row: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            loop {
                let mut query = state.walk.query.clone();
                if let Some(offset) = &state.offset {
                    query.set("offset", offset.clone());
                }
                let request =
                    ApiRequest::get(state.walk.path.clone(), query).class(state.walk.class);
                match state.walk.client.execute(&request).await {
                    Ok(body) => {
                        let page = match parse_page::<T>(body, &state.walk.path) {
                            Ok(page) => page,
                            Err(error) => {
                                state.done = true;
                                return Some((Err(error), state));
                            }
                        };
                        let page = Page {
                            restarted: std::mem::take(&mut state.restarted),
                            ..page
                        };
                        state.fallbacks_in_a_row = 0;
                        let empty = page.data.is_empty();
                        if let Some(last) = page.data.last() {
                            state.last = Some(last.clone());
                        }
                        match (&page.next_offset, state.walk.stop) {
                            (None, _) => state.done = true,
                            (Some(_), StopRule::EmptyData) if empty => state.done = true,
                            (Some(next), _) => state.offset = Some(next.clone()),
                        }
                        return Some((Ok(page), state));
                    }
                    Err(AsanaError::OffsetExpired { message })
                        if state.offset.is_some()
                            && state.fallbacks_in_a_row < MAX_FALLBACKS_IN_A_ROW =>
                    {
                        let restart = state
                            .walk
                            .fallback
                            .as_mut()
                            .and_then(|fallback| fallback(state.last.as_ref()));
                        match restart {
                            Some(mut query) => {
                                query.remove("offset");
                                if query.get("limit").is_none()
                                    && let Some(limit) = state.walk.query.get("limit")
                                {
                                    query.set("limit", limit.to_string());
                                }
                                tracing::info!(
                                    path = %state.walk.path,
                                    "Pagination offset expired; restarting the walk from the fallback filter"
                                );
                                metrics::counter!("asana_worker_offset_fallbacks_total")
                                    .increment(1);
                                state.walk.query = query;
                                state.offset = None;
                                state.restarted = true;
                                state.fallbacks_in_a_row += 1;
                                continue;
                            }
                            None => {
                                state.done = true;
                                return Some((Err(AsanaError::OffsetExpired { message }), state));
                            }
                        }
                    }
                    Err(error) => {
                        state.done = true;
                        return Some((Err(error), state));
                    }
                }
            }
        })
    }

    /// The items of every page, in order.
    pub fn items(self) -> impl Stream<Item = Result<T, AsanaError>> + Send + 'static {
        use futures::StreamExt;
        self.pages().flat_map(|page| {
            let items: Vec<Result<T, AsanaError>> = match page {
                Ok(page) => page.data.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            futures::stream::iter(items)
        })
    }

    /// Collects every item (for short lists).
    pub async fn collect(self) -> Result<Vec<T>, AsanaError> {
        use futures::TryStreamExt;
        self.items().try_collect().await
    }
}

fn parse_page<T: DeserializeOwned>(body: Value, path: &str) -> Result<Page<T>, AsanaError> {
    let decode = |message: String| AsanaError::Decode {
        context: path.to_string(),
        message,
    };
    let Value::Object(mut map) = body else {
        return Err(decode("the body is not a JSON object".into()));
    };
    let data = map
        .remove("data")
        .ok_or_else(|| decode("the body has no `data` member".into()))?;
    let data: Vec<T> = serde_json::from_value(data).map_err(|e| decode(e.to_string()))?;
    let next_offset = match map.remove("next_page") {
        None | Some(Value::Null) => None,
        Some(Value::Object(next)) => match next.get("offset") {
            Some(Value::String(offset)) => Some(offset.clone()),
            _ => return Err(decode("`next_page` has no string `offset`".into())),
        },
        Some(_) => return Err(decode("`next_page` is neither an object nor null".into())),
    };
    Ok(Page {
        data,
        next_offset,
        restarted: false,
    })
}
