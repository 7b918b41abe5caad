//! The `trellis-controller` binary: see the library for what it does.

fn main() {}
