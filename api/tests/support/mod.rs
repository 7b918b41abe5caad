//! Shared by the integration tests of `trellis-api`.

#![allow(dead_code)]

pub mod arbitrary;
pub mod fixtures;
