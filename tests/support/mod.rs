//! Helpers shared by the integration tests.

pub mod oauth;
pub mod pg;
pub mod sim;
pub mod spec;
