//! `mock-provider`: a simulator of AI provider APIs, used as the upstream in tests and
//! benchmarks and, in process, as the gateway's built-in `sim` provider.
//!
//! It owns wire-exact request parsing and response building for each provider format it
//! speaks (today: OpenAI chat completions, SSE streaming, embeddings, models, error bodies)
//! and the pacing of streams. It deliberately knows nothing about routing, keys or storage:
//! the gateway must treat it exactly like a remote provider.

pub mod openai;
mod server;
pub mod sim;

pub use server::{MockConfig, MockModel, MockState, Recorded, Stats, paced, router, serve};
