#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The simulator's formats read back by the gateway's independent codecs.

mod formats;
