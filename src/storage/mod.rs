//! Where snapshots are stored: a local directory and S3, the S3 configuration, and one catalog
//! view of both.

pub mod catalog;
pub mod config;
pub mod local;
pub mod s3;
