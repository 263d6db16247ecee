//! Where snapshots are stored.

pub mod config;
pub mod local;
pub mod s3;
