//! Test helpers shared by pgark's crates.

pub mod conformance;
pub mod faults;
pub mod pg;
pub mod proxy;
pub mod servers;
