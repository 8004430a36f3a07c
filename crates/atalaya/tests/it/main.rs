#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! End-to-end tests: the real `atalaya` binary on ephemeral ports, with `mock-provider`
//! as the upstream where one is needed.

mod alerts;
mod analytics;
mod audit;
mod bad_input;
mod budgets;
mod cli;
mod compare;
mod errors;
mod events;
mod guardrails;
mod harness;
mod health;
mod keys;
mod masking;
mod messages;
mod metrics;
mod providers;
mod rate_limits;
mod reload;
mod request_log;
mod roles;
mod routing;
mod sim;
mod tracing;
mod transport;
mod upstream;
mod vault;
