//! `mock-provider`: a simulator of AI provider APIs, used as the upstream in tests and
//! benchmarks and, in process, as the gateway's built-in `sim` provider.
//!
//! It owns wire-exact request parsing and response building for each provider format it
//! speaks — OpenAI (and Azure OpenAI's paths), Anthropic Messages, Gemini, Cohere v2 and
//! Bedrock Converse, streaming included — the pacing of streams, and injected faults. Its
//! formats are written from the providers' API references independently of the gateway's
//! codecs, so each side checks the other; only the AWS event-stream framing and SigV4 are
//! shared. It deliberately knows nothing about routing, keys or storage: the gateway must
//! treat it exactly like a remote provider.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod openai;
pub mod profile;
mod server;
pub mod sim;

pub use profile::{Latency, Profile, Rule as FaultRule};
pub use server::{
    DEFAULT_AWS_ACCESS_KEY_ID, DEFAULT_AWS_SECRET_ACCESS_KEY, Fault, MockConfig, MockModel,
    MockState, Recorded, Stats, paced, router, serve,
};
