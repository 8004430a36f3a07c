#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Properties of translation between formats, over generated conversations.

mod roundtrip;
