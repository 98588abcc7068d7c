//! The one harness every integration test uses: the simulator's admin API, daemon processes,
//! audit-log set-ups, moto for S3, an SMTP server and a webhook receiver for digests, throw-away PostgreSQL databases, OAuth flows, the OpenAPI
//! spec and external tools (promtool). Each test binary declares `mod support;` and uses the parts it needs.

#![allow(dead_code, unused_imports)]

pub mod audit;
pub mod daemon;
pub mod digest;
pub mod moto;
pub mod oauth;
pub mod pg;
pub mod sim;
pub mod spec;
pub mod status;
pub mod sync;
pub mod tools;
