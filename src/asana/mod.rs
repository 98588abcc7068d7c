//! The Asana REST client: `{"data": …}` envelopes, one typed error for every documented status,
//! pagination as async streams (with the audit log's stop rule and a fallback for expired
//! offsets), `opt_fields`, retries with backon, and typed methods for the endpoints the job kinds
//! use.
//!
//! Every attempt, retries included, first takes a permit from the token's [`crate::budget::Budget`]:
//! the client cannot send a request the budget has not allowed.
//!
//! Metrics (besides the budget's):
//! - `asana_worker_requests_total` (counter; `token`, `class` = read | write | search, `status` = HTTP
//!   status or `timeout` | `transport` | `cancelled`): attempts by endpoint class and outcome.
//! - `asana_worker_rate_limited_total` (counter; `token`, `cause` = `quota` | `search`): 429s by
//!   bucket. The budget never overfills either, so each one means another client spends the
//!   token (or a concurrency or export-job limit was hit by someone else).
//! - `asana_worker_request_duration_seconds` (histogram; `class`).
//! - `asana_worker_retries_total` (counter; `token`, `reason`).
//! - `asana_worker_offset_fallbacks_total` (counter): walks restarted after an expired offset.

mod client;
mod endpoints;
mod error;
mod pagination;
mod types;

pub use client::{
    ApiRequest, AsanaClient, CallContext, ClientConfig, DEFAULT_BASE_URL, Idempotency, Query,
    RetryConfig, TokenProvider, USER_AGENT, segment, validate_base_url,
};
pub use endpoints::MAX_BATCH_ACTIONS;
pub use error::{AsanaError, retry_after};
pub use pagination::{ListWalk, MAX_PAGE_SIZE, OffsetFallback, Page, StopRule};
pub use types::{
    AuditLogFilter, BatchAction, BatchResult, EventsPage, ExportFile, Job, NewStatusUpdate,
    OrganizationExport, Resource, User, Workspace,
};
