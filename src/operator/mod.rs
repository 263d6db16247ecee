//! What the controller and the agents share in the cluster: agent registration Leases
//! ([`registration`]), S3 settings and the encryption key from Secrets ([`secrets`]), record
//! status writes ([`records`]) and events (see [`crate::events`]).

mod records;
mod registration;
mod secrets;

pub use records::{patch_file_status, record_delete_failure};
pub use registration::{AgentInfo, leases};
pub use secrets::{
    encryption_key_from_secret, inline_from_location, s3_config_for_file, s3_config_from_secret,
};

pub use crate::events::Events;

use crate::consts;
use crate::snapshot::crypt::CryptError;
use crate::storage::config::S3ConfigError;

/// Errors reading operator settings from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The S3 config Secret does not exist.
    #[error("S3 config Secret {namespace}/{name} not found")]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The CA ConfigMap named by the Secret does not exist.
    #[error("endpoint CA ConfigMap {namespace}/{name} not found")]
    CaConfigMapMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Secret's values are invalid.
    #[error("S3 config Secret {name}: {source}")]
    BadSecret {
        /// Secret name.
        name: String,
        /// What is wrong (never a credential).
        source: S3ConfigError,
    },
    /// Inline S3 settings are invalid.
    #[error("S3 settings: {0}")]
    BadInline(S3ConfigError),
    /// The encryption key Secret does not exist, or lacks the key.
    #[error("encryption key Secret {namespace}/{name} not found or has no key {key:?}")]
    KeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// Key in the Secret's data.
        key: String,
    },
    /// The encryption key in the Secret is unusable (never shows the key).
    #[error("encryption key Secret {name} key {key:?}: {source}")]
    BadKey {
        /// Secret name.
        name: String,
        /// Key in the Secret's data.
        key: String,
        /// What is wrong.
        source: CryptError,
    },
    /// An API request failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: String,
        /// The error.
        source: kube::Error,
    },
}

impl OperatorError {
    /// PascalCase reason, for events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            OperatorError::SecretMissing { .. } => consts::errors::SECRET_MISSING,
            OperatorError::CaConfigMapMissing { .. } => consts::errors::CA_CONFIG_MAP_MISSING,
            OperatorError::BadSecret { .. } => consts::errors::INVALID_SECRET,
            OperatorError::BadInline(_) => consts::errors::INVALID_S3_SETTINGS,
            OperatorError::KeyMissing { .. } => consts::errors::ENCRYPTION_KEY_MISSING,
            OperatorError::BadKey { .. } => consts::errors::INVALID_ENCRYPTION_KEY,
            OperatorError::Kube { .. } => consts::errors::KUBERNETES_API,
        }
    }

    /// True for errors a user must fix (no point retrying fast).
    pub fn is_config(&self) -> bool {
        !matches!(self, OperatorError::Kube { .. })
    }
}

pub(crate) fn kube_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> OperatorError {
    let op = op.into();
    move |source| OperatorError::Kube { op, source }
}
