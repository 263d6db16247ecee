//! Conversions between chrono times and Kubernetes `Time` (whole seconds, as status fields
//! carry them).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// chrono -> Kubernetes time.
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// Kubernetes time -> chrono.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}
