//! S3 settings, resolved from one of three sources into one validated [`S3Config`]: the S3 config
//! Secret (k3s's `etcd-s3-*` keys), the CLI's `--s3-*` flags, or a schedule's inline non-secret
//! fields. Pure: no network, no async. The only I/O is [`load_ca_items`], which reads CA files
//! named on the CLI.
//!
//! Decisions:
//! - An endpoint may be given as `https://host` or `http://host`; the scheme is stripped and
//!   `http://` means insecure. A scheme that contradicts an explicit insecure setting
//!   (`http://` with insecure `false`, `https://` with insecure `true`) is an error, never a guess.
//! - Only Secrets of type [`consts::SECRET_TYPE`] or [`consts::SECRET_TYPE_K3S`] are read, not
//!   `Opaque`: the type is the owner's opt-in that the operator may read the Secret, so a schedule
//!   author cannot point the operator at an unrelated Secret in its namespace.
//! - Bucket lookup `auto` uses virtual-host style for AWS (`s3.amazonaws.com`, `s3.<region>…`,
//!   `s3-<region>…`, `.amazonaws.com.cn`), Google (`storage.googleapis.com`) and aliyun endpoints
//!   (as minio-go and k3s), except dotted buckets over HTTPS (not covered by the wildcard
//!   certificate; aliyun has no path style, so it stays virtual-host); path style for the rest.
//! - Credentials never appear in `Debug` output or in an error; neither does a proxy's user info.

use crate::api::{BucketLookup, S3Location, S3Storage};
use crate::cli::args::{LookupArg, S3Args};
use crate::consts::{self, secret_keys as keys};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How the S3 client reaches the endpoint.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// The `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment variables (the default).
    #[default]
    Environment,
    /// No proxy, whatever the environment says (`none`).
    None,
    /// This proxy URL (scheme `http`, `https` or `socks5`).
    Url(String),
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proxy::Environment => f.write_str("Environment"),
            Proxy::None => f.write_str("None"),
            Proxy::Url(u) => f.debug_tuple("Url").field(&redact_userinfo(u)).finish(),
        }
    }
}

/// Validated S3 settings. `Debug` redacts the credentials.
#[derive(Clone, PartialEq)]
pub struct S3Config {
    /// `host[:port]`, no scheme.
    pub endpoint: String,
    /// PEM bundle of the CA certificates that verify the endpoint (system roots if `None`).
    pub endpoint_ca: Option<String>,
    /// Do not verify the endpoint's certificate (wins over `endpoint_ca`).
    pub skip_ssl_verify: bool,
    /// Static access key; `None` means the AWS default chain (env, profile, IAM).
    pub access_key: Option<String>,
    /// Static secret key, set exactly when `access_key` is.
    pub secret_key: Option<String>,
    /// Session token for temporary credentials (only with static keys).
    pub session_token: Option<String>,
    /// Bucket name (validated against the S3 naming rules).
    pub bucket: String,
    /// Bucket addressing; see [`S3Config::use_path_style`].
    pub bucket_lookup: BucketLookup,
    /// Region (default `us-east-1`).
    pub region: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub folder: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Timeout per S3 operation (default 5m).
    pub timeout: Duration,
    /// Proxy to use.
    pub proxy: Proxy,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        let ca = self
            .endpoint_ca
            .as_ref()
            .map(|c| format!("<{} bytes of PEM>", c.len()));
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("endpoint_ca", &ca)
            .field("skip_ssl_verify", &self.skip_ssl_verify)
            .field("access_key", &hide(&self.access_key))
            .field("secret_key", &hide(&self.secret_key))
            .field("session_token", &hide(&self.session_token))
            .field("bucket", &self.bucket)
            .field("bucket_lookup", &self.bucket_lookup)
            .field("region", &self.region)
            .field("folder", &self.folder)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Why S3 settings are refused. Messages name the setting (as the source spells it: Secret key,
/// CLI flag or spec field), say what was expected, and never contain a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3ConfigError {
    /// A required setting is missing.
    #[error("{field} is missing")]
    Missing {
        /// Setting name.
        field: &'static str,
    },
    /// A Secret value is not UTF-8 (the value is not shown: it may be a credential).
    #[error("{field} is not valid UTF-8")]
    NotUtf8 {
        /// Setting name.
        field: &'static str,
    },
    /// A boolean that is not `true` or `false`.
    #[error("{field}: {value:?} is not a boolean (true or false)")]
    NotBoolean {
        /// Setting name.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A malformed endpoint, proxy, bucket, bucket lookup, folder or timeout.
    #[error("{field} {value:?} {expected}")]
    Invalid {
        /// Setting name.
        field: &'static str,
        /// The value given (a proxy's user info redacted).
        value: String,
        /// What is wrong and what is expected.
        expected: String,
    },
    /// An endpoint with `user@` (not shown: it may hold credentials).
    #[error(
        "{field} must be host[:port] without user info; put credentials in the access and secret keys"
    )]
    EndpointUserInfo {
        /// Setting name.
        field: &'static str,
    },
    /// No certificate in the CA setting.
    #[error("{field} does not contain a PEM certificate")]
    NoCertificate {
        /// Setting name.
        field: &'static str,
    },
    /// A broken certificate block in the CA setting.
    #[error("{field}: {reason}")]
    BadCertificate {
        /// Setting name.
        field: &'static str,
        /// What is broken.
        reason: &'static str,
    },
    /// A CA file named by `--s3-endpoint-ca` cannot be read.
    #[error("--s3-endpoint-ca: cannot read CA file {path:?}: {error}")]
    CaFile {
        /// The path.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// The Secret names a CA ConfigMap whose data the caller did not find.
    #[error("etcd-s3-endpoint-ca-name: ConfigMap {0:?} was not found in the operator's namespace")]
    CaConfigMapMissing(String),
    /// Only part of the static credentials is set.
    #[error("{field} is set but {needs} is missing")]
    Credentials {
        /// The setting given.
        field: &'static str,
        /// The setting it needs.
        needs: &'static str,
    },
    /// A Secret of a type the operator does not read.
    #[error("Secret type {0:?} is not {ty} or {k3s}", ty = consts::SECRET_TYPE, k3s = consts::SECRET_TYPE_K3S)]
    SecretType(String),
}

type Result<T> = std::result::Result<T, S3ConfigError>;

const BUCKET_RULES: &str = "is not a valid S3 bucket name: 3 to 63 lowercase letters, digits, \
    '.' and '-', starting and ending with a letter or digit, no '..', not an IP address";
const TIMEOUT_RULES: &str = "is not a positive duration like 5m, 90s or 1m30s";

fn invalid(field: &'static str, value: &str, expected: impl Into<String>) -> S3ConfigError {
    let (value, expected) = (value.to_string(), expected.into());
    S3ConfigError::Invalid {
        field,
        value,
        expected,
    }
}

/// Whether a Secret of type `t` may be read as S3 config: ours or k3s's, never `Opaque` (see the
/// module docs).
pub fn secret_type_ok(t: &str) -> bool {
    t == consts::SECRET_TYPE || t == consts::SECRET_TYPE_K3S
}

/// [`secret_type_ok`] as a `Result`, with the message to report.
pub fn check_secret_type(t: &str) -> Result<()> {
    secret_type_ok(t)
        .then_some(())
        .ok_or_else(|| S3ConfigError::SecretType(t.to_string()))
}

/// The CA ConfigMap a Secret names (`etcd-s3-endpoint-ca-name`), which the caller must fetch
/// and pass to [`S3Config::from_secret`].
pub fn ca_configmap_name<V: AsRef<[u8]>>(data: &BTreeMap<String, V>) -> Option<String> {
    secret_value(data, keys::ENDPOINT_CA_NAME).ok().flatten()
}

/// The inline fields of `spec` set alongside `configSecretRef` (spec field names); empty when no
/// Secret is referenced. A non-empty list makes the schedule Invalid.
pub fn clashing_inline_fields(spec: &S3Storage) -> Vec<&'static str> {
    if spec.config_secret_ref.is_none() {
        return Vec::new();
    }
    [
        ("endpoint", spec.endpoint.is_some()),
        ("endpointCA", spec.endpoint_ca.is_some()),
        ("skipSSLVerify", spec.skip_ssl_verify.is_some()),
        ("bucket", spec.bucket.is_some()),
        ("bucketLookup", spec.bucket_lookup.is_some()),
        ("region", spec.region.is_some()),
        ("folder", spec.folder.is_some()),
        ("insecure", spec.insecure.is_some()),
        ("timeout", spec.timeout.is_some()),
        ("proxy", spec.proxy.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Reads the `--s3-endpoint-ca` value as k3s does and returns the PEM text (not yet validated).
/// A value containing `-----BEGIN` is PEM itself; otherwise it is a space-separated list whose
/// items are base64-encoded PEM or file paths. This is the module's only I/O.
pub fn load_ca_items(value: &str) -> Result<String> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_string());
    }
    let mut pem = String::new();
    for item in value.split_whitespace() {
        let decoded = decode_b64(item).and_then(|b| String::from_utf8(b).ok());
        let text = match decoded {
            Some(t) if t.contains("-----BEGIN") => t,
            _ => std::fs::read_to_string(item).map_err(|e| S3ConfigError::CaFile {
                path: item.to_string(),
                error: e.to_string(),
            })?,
        };
        pem.push_str(&text);
        pem.push('\n');
    }
    Ok(pem)
}

/// Setting names as a source spells them, for error messages.
struct Names {
    endpoint: &'static str,
    endpoint_ca: &'static str,
    access_key: &'static str,
    secret_key: &'static str,
    session_token: &'static str,
    bucket: &'static str,
    folder: &'static str,
    insecure: &'static str,
    timeout: &'static str,
    proxy: &'static str,
}

const SECRET: Names = Names {
    endpoint: keys::ENDPOINT,
    endpoint_ca: keys::ENDPOINT_CA,
    access_key: keys::ACCESS_KEY,
    secret_key: keys::SECRET_KEY,
    session_token: keys::SESSION_TOKEN,
    bucket: keys::BUCKET,
    folder: keys::FOLDER,
    insecure: keys::INSECURE,
    timeout: keys::TIMEOUT,
    proxy: keys::PROXY,
};

const CLI: Names = Names {
    endpoint: "--s3-endpoint",
    endpoint_ca: "--s3-endpoint-ca",
    access_key: "--s3-access-key",
    secret_key: "--s3-secret-key",
    session_token: "--s3-session-token",
    bucket: "--s3-bucket",
    folder: "--s3-folder",
    insecure: "--s3-insecure",
    timeout: "--s3-timeout",
    proxy: "--s3-proxy",
};

const INLINE: Names = Names {
    endpoint: "spec.s3.endpoint",
    endpoint_ca: "spec.s3.endpointCA",
    access_key: "",
    secret_key: "",
    session_token: "",
    bucket: "spec.s3.bucket",
    folder: "spec.s3.folder",
    insecure: "spec.s3.insecure",
    timeout: "spec.s3.timeout",
    proxy: "spec.s3.proxy",
};

/// Settings as given (trimmed, empty = unset), before validation.
#[derive(Default)]
struct Raw {
    endpoint: Option<String>,
    endpoint_ca: Option<String>,
    skip_ssl_verify: Option<bool>,
    access_key: Option<String>,
    secret_key: Option<String>,
    session_token: Option<String>,
    bucket: Option<String>,
    bucket_lookup: BucketLookup,
    folder: Option<String>,
    region: Option<String>,
    insecure: Option<bool>,
    timeout: Option<String>,
    proxy: Option<String>,
}

impl Raw {
    fn resolve(self, n: &Names) -> Result<S3Config> {
        let raw_endpoint = self
            .endpoint
            .as_deref()
            .unwrap_or(consts::DEFAULT_S3_ENDPOINT);
        let (endpoint, insecure) =
            parse_endpoint(n.endpoint, raw_endpoint, n.insecure, self.insecure)?;
        let bucket = self
            .bucket
            .ok_or(S3ConfigError::Missing { field: n.bucket })?;
        if !bucket_name_ok(&bucket) {
            return Err(invalid(n.bucket, &bucket, BUCKET_RULES));
        }
        let timeout_text = self
            .timeout
            .as_deref()
            .unwrap_or(consts::DEFAULT_S3_TIMEOUT);
        let timeout = crate::duration::parse_go(timeout_text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| invalid(n.timeout, timeout_text, TIMEOUT_RULES))?;
        let (ak, sk, token) = (&self.access_key, &self.secret_key, &self.session_token);
        let incomplete = match (ak.is_some(), sk.is_some(), token.is_some()) {
            (true, false, _) => Some((n.access_key, n.secret_key)),
            (false, true, _) => Some((n.secret_key, n.access_key)),
            (false, false, true) => Some((n.session_token, n.access_key)),
            _ => None,
        };
        if let Some((field, needs)) = incomplete {
            return Err(S3ConfigError::Credentials { field, needs });
        }
        let endpoint_ca = match self.endpoint_ca {
            Some(text) => Some(validate_ca(n.endpoint_ca, &text)?),
            None => None,
        };
        Ok(S3Config {
            endpoint,
            endpoint_ca,
            skip_ssl_verify: self.skip_ssl_verify.unwrap_or(false),
            access_key: self.access_key,
            secret_key: self.secret_key,
            session_token: self.session_token,
            bucket,
            bucket_lookup: self.bucket_lookup,
            region: self
                .region
                .unwrap_or_else(|| consts::DEFAULT_S3_REGION.to_string()),
            folder: normalise_folder(n.folder, self.folder.as_deref().unwrap_or(""))?,
            insecure,
            timeout,
            proxy: parse_proxy(n.proxy, self.proxy.as_deref().unwrap_or(""))?,
        })
    }
}

impl S3Config {
    /// From the data of an S3 config Secret (k3s keys; unknown keys ignored). `ca_configmap` is
    /// the data of the ConfigMap named by `etcd-s3-endpoint-ca-name` (see [`ca_configmap_name`]);
    /// its values are concatenated after any `etcd-s3-endpoint-ca` bundle.
    pub fn from_secret<V: AsRef<[u8]>>(
        data: &BTreeMap<String, V>,
        ca_configmap: Option<&BTreeMap<String, String>>,
    ) -> Result<S3Config> {
        let get = |key| secret_value(data, key);
        let boolean = |key| get(key)?.map(|v| parse_bool(key, &v)).transpose();
        let mut ca: Option<String> = get(keys::ENDPOINT_CA)?.map(|c| pem_or_base64(&c));
        if let Some(name) = get(keys::ENDPOINT_CA_NAME)? {
            let cm = ca_configmap.ok_or(S3ConfigError::CaConfigMapMissing(name))?;
            let joined = ca.get_or_insert_with(String::new);
            for v in cm.values() {
                joined.push('\n');
                joined.push_str(&pem_or_base64(v.trim()));
            }
        }
        let bucket_lookup = match get(keys::BUCKET_LOOKUP_TYPE)? {
            None => BucketLookup::Auto,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "auto" => BucketLookup::Auto,
                "dns" => BucketLookup::Dns,
                "path" => BucketLookup::Path,
                _ => {
                    let expected = "is not one of auto, dns or path";
                    return Err(invalid(keys::BUCKET_LOOKUP_TYPE, &v, expected));
                }
            },
        };
        Raw {
            endpoint: get(keys::ENDPOINT)?,
            endpoint_ca: ca,
            skip_ssl_verify: boolean(keys::SKIP_SSL_VERIFY)?,
            access_key: get(keys::ACCESS_KEY)?,
            secret_key: get(keys::SECRET_KEY)?,
            session_token: get(keys::SESSION_TOKEN)?,
            bucket: get(keys::BUCKET)?,
            bucket_lookup,
            folder: get(keys::FOLDER)?,
            region: get(keys::REGION)?,
            insecure: boolean(keys::INSECURE)?,
            timeout: get(keys::TIMEOUT)?,
            proxy: get(keys::PROXY)?,
        }
        .resolve(&SECRET)
    }

    /// From the CLI's `--s3-*` flags (credentials may come from `AWS_*` via clap). Reads the CA
    /// files `--s3-endpoint-ca` names.
    pub fn from_args(args: &S3Args) -> Result<S3Config> {
        let ca = match trimmed(args.endpoint_ca.as_deref()) {
            Some(v) => Some(load_ca_items(&v)?),
            None => None,
        };
        Raw {
            endpoint: trimmed(Some(&args.endpoint)),
            endpoint_ca: ca,
            skip_ssl_verify: Some(args.skip_ssl_verify),
            access_key: trimmed(args.access_key.as_deref()),
            secret_key: trimmed(args.secret_key.as_deref()),
            session_token: trimmed(args.session_token.as_deref()),
            bucket: trimmed(args.bucket.as_deref()),
            bucket_lookup: match args.bucket_lookup_type {
                LookupArg::Auto => BucketLookup::Auto,
                LookupArg::Dns => BucketLookup::Dns,
                LookupArg::Path => BucketLookup::Path,
            },
            folder: trimmed(args.folder.as_deref()),
            region: trimmed(Some(&args.region)),
            // An unset flag is not an explicit `false`: `http://` endpoints still work.
            insecure: args.insecure.then_some(true),
            timeout: trimmed(Some(&args.timeout)),
            proxy: trimmed(args.proxy.as_deref()),
        }
        .resolve(&CLI)
    }

    /// From a schedule's inline fields (no credentials: the AWS default chain applies). Call
    /// only when no `configSecretRef` is set (see [`clashing_inline_fields`]).
    pub fn from_schedule_inline(spec: &S3Storage) -> Result<S3Config> {
        Raw {
            endpoint: trimmed(spec.endpoint.as_deref()),
            endpoint_ca: trimmed(spec.endpoint_ca.as_deref()).map(|c| pem_or_base64(&c)),
            skip_ssl_verify: spec.skip_ssl_verify,
            bucket: trimmed(spec.bucket.as_deref()),
            bucket_lookup: spec.bucket_lookup.unwrap_or_default(),
            folder: trimmed(spec.folder.as_deref()),
            region: trimmed(spec.region.as_deref()),
            insecure: spec.insecure,
            timeout: trimmed(spec.timeout.as_deref()),
            proxy: trimmed(spec.proxy.as_deref()),
            ..Raw::default()
        }
        .resolve(&INLINE)
    }

    /// `https`, or `http` when insecure.
    pub fn scheme(&self) -> &'static str {
        if self.insecure { "http" } else { "https" }
    }

    /// `scheme://host[:port]`.
    pub fn endpoint_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.endpoint)
    }

    /// Whether requests use path style (`endpoint/bucket/key`) rather than virtual-host style
    /// (`bucket.endpoint/key`); see the module docs for `auto`.
    pub fn use_path_style(&self) -> bool {
        match self.bucket_lookup {
            BucketLookup::Path => true,
            BucketLookup::Dns => false,
            BucketLookup::Auto => {
                let host = host_of(&self.endpoint).to_ascii_lowercase();
                if host.contains("aliyun") {
                    return false;
                }
                let virtual_host = is_aws_host(&host) || host == "storage.googleapis.com";
                !virtual_host || (!self.insecure && self.bucket.contains('.'))
            }
        }
    }

    /// The object key of `name`: `folder/name`, or `name` at the bucket's root.
    pub fn object_key(&self, name: &str) -> String {
        if self.folder.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.folder)
        }
    }

    /// `s3://bucket/folder/name`, the location recorded in an ETCDSnapshotFile.
    pub fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.object_key(name))
    }

    /// The ETCDSnapshotFile `spec.s3` part; never credentials.
    pub fn to_location(&self) -> S3Location {
        S3Location {
            endpoint: Some(self.endpoint.clone()),
            endpoint_ca: self.endpoint_ca.clone(),
            skip_ssl_verify: Some(self.skip_ssl_verify),
            bucket: self.bucket.clone(),
            bucket_lookup: Some(self.bucket_lookup),
            region: Some(self.region.clone()),
            prefix: (!self.folder.is_empty()).then(|| self.folder.clone()),
            insecure: Some(self.insecure),
        }
    }
}

fn trimmed(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn secret_value<V: AsRef<[u8]>>(
    data: &BTreeMap<String, V>,
    key: &'static str,
) -> Result<Option<String>> {
    match data.get(key) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v.as_ref())
            .map(|s| trimmed(Some(s)))
            .map_err(|_| S3ConfigError::NotUtf8 { field: key }),
    }
}

fn parse_bool(field: &'static str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(S3ConfigError::NotBoolean {
            field,
            value: v.to_string(),
        }),
    }
}

/// `(host[:port], insecure)` from an endpoint that may carry an `http://` or `https://` scheme.
fn parse_endpoint(
    field: &'static str,
    value: &str,
    insecure_field: &'static str,
    insecure: Option<bool>,
) -> Result<(String, bool)> {
    let bad = |expected: &str| invalid(field, value, expected);
    let lower = value.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        (Some("https"), &value[8..])
    } else if lower.starts_with("http://") {
        (Some("http"), &value[7..])
    } else if value.contains("://") {
        return Err(bad(
            "must be host[:port]; the only schemes accepted are http:// and https://",
        ));
    } else {
        (None, value)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(S3ConfigError::EndpointUserInfo { field });
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad("must be host[:port] without a path"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad(
                "must be host[:port]; the IPv6 address in [] is malformed",
            ));
        }
        match after {
            "" => (rest, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (&rest[..addr.len() + 2], Some(p)),
                None => return Err(bad("must be [ipv6]:port")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad(
                    "must be host[:port]; write IPv6 addresses as [addr]:port",
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("must be host[:port]; the host is empty"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(bad(
            "must be host[:port]; the host may hold only letters, digits, '-', '.' and '_'",
        ));
    }
    if let Some(p) = port
        && (!p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)))
    {
        return Err(bad("must be host[:port] with a port from 1 to 65535"));
    }
    let insecure = match (scheme, insecure) {
        (Some("https"), Some(true)) | (Some("http"), Some(false)) => {
            let (scheme, insecure) = (scheme.unwrap_or_default(), insecure.unwrap_or_default());
            return Err(bad(&format!(
                "says {scheme}:// but {insecure_field} is {insecure}; drop the scheme or change {insecure_field}"
            )));
        }
        (Some(s), _) => s == "http",
        (None, i) => i.unwrap_or(false),
    };
    Ok((rest.to_string(), insecure))
}

fn host_of(endpoint: &str) -> &str {
    match endpoint.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => h,
        _ => endpoint,
    }
}

/// AWS S3 endpoints, as minio-go recognises them.
fn is_aws_host(host: &str) -> bool {
    (host.starts_with("s3.") || host.starts_with("s3-"))
        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
}

fn parse_proxy(field: &'static str, value: &str) -> Result<Proxy> {
    if value.is_empty() {
        return Ok(Proxy::Environment);
    }
    if value.eq_ignore_ascii_case("none") {
        return Ok(Proxy::None);
    }
    let bad = |expected: String| invalid(field, &redact_userinfo(value), expected);
    let Some((scheme, rest)) = value.split_once("://") else {
        // The example repeats the value only when it prints as one plain line (the message is
        // one line; the value itself is shown quoted and escaped).
        let shown = redact_userinfo(value);
        let host = if shown.chars().any(|c| c.is_control() || c.is_whitespace()) {
            "HOST:PORT".to_string()
        } else {
            shown
        };
        return Err(bad(format!(
            "must be a URL with a scheme, like http://{host}"
        )));
    };
    if !["http", "https", "socks5", "socks5h"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(bad("must use the scheme http, https or socks5".to_string()));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (hostport, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad(
            "must be a URL with a host, like http://proxy.local:3128".to_string(),
        ));
    }
    if port.is_some_and(|p| !matches!(p.parse::<u16>(), Ok(1..)) || p.starts_with('+')) {
        return Err(bad("must have a port from 1 to 65535".to_string()));
    }
    Ok(Proxy::Url(value.to_string()))
}

/// `value` with everything from after the scheme up to the last `@` replaced by `<redacted>`:
/// user info may hold characters (`/`, `?`, `#`) that would end a well-formed authority, so the
/// last `@` is taken, erring on the side of hiding too much.
fn redact_userinfo(value: &str) -> String {
    let start = value.find("://").map_or(0, |i| i + 3);
    match value[start..].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &value[..start], &value[start + at..]),
        None => value.to_string(),
    }
}

/// S3 bucket naming rules (general purpose buckets).
fn bucket_name_ok(b: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge_ok(b.chars().next())
        && edge_ok(b.chars().last())
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err()
}

/// The folder without empty and `.` segments (so no leading/trailing `/`); `..` is refused.
fn normalise_folder(field: &'static str, value: &str) -> Result<String> {
    let segments: Vec<&str> = value
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segments.contains(&"..") || value.contains(char::is_control) {
        let expected = "must be a key prefix like a/b, without '..' segments or control characters";
        return Err(invalid(field, value, expected));
    }
    Ok(segments.join("/"))
}

/// `text` itself if it looks like PEM, else its base64 decoding when that is PEM text.
fn pem_or_base64(text: &str) -> String {
    let decoded = || decode_b64(text).and_then(|b| String::from_utf8(b).ok());
    match decoded() {
        Some(pem) if !text.contains("-----BEGIN") && pem.contains("-----BEGIN") => pem,
        _ => text.to_string(),
    }
}

/// The certificate blocks of a PEM bundle (parsed by `rustls-pki-types`, each body checked to be
/// DER), written out again as PEM and joined. Other block types are ignored.
fn validate_ca(field: &'static str, text: &str) -> Result<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::{Error as PemError, PemObject};
    let bad = |reason| S3ConfigError::BadCertificate { field, reason };
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
        let der = cert.map_err(|e| {
            bad(match e {
                PemError::MissingSectionEnd { .. } => "a PEM block has no END line",
                PemError::IllegalSectionStart { .. } => "a BEGIN line is not a PEM block start",
                PemError::Base64Decode(_) => "a certificate body is not base64-encoded DER",
                _ => "the PEM text cannot be read",
            })
        })?;
        // A DER certificate is a SEQUENCE.
        if der.first() != Some(&0x30) {
            return Err(bad("a certificate body is not base64-encoded DER"));
        }
        certs.push(pem_certificate(&der));
    }
    if certs.is_empty() {
        return Err(S3ConfigError::NoCertificate { field });
    }
    Ok(certs.concat())
}

/// One `CERTIFICATE` PEM block, base64 in lines of 64 characters.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Standard base64 with padding; whitespace ignored. `None` if malformed or empty.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretRef;
    use proptest::prelude::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUO/bpvMYLM6Ish9s2iD3qS9+dVCswCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjExMjQxNjMyMDlaGA8yMTI2MTAzMTE2
MzIwOVowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABN1lSDt948e9i95BkaHRisEEiFupgDIkflFZza0xxIV47ot1gnIQIOvas8b0
5iZ8xbyvQjQBsEfAY2zlo81dvjijUzBRMB0GA1UdDgQWBBQA5UFSsIp9p26OdGmE
dyPnEwEN4jAfBgNVHSMEGDAWgBQA5UFSsIp9p26OdGmEdyPnEwEN4jAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDmt7pgsm7cP8/kzdSAbHgzi09S
9TwfPNtUs+3i2crFbgIgbj0ViBfbdCxetOw7YRIe96QiIA6tFFLxUsh8Uus6fIw=
-----END CERTIFICATE-----
";
    /// A minimal certificate-shaped block (DER `30 03 02 01 01`), and its base64.
    const TINY: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    const TINY_B64: &str =
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1BTUNBUUU9Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";

    fn secret(pairs: &[(&str, &str)]) -> Result<S3Config> {
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        data.insert(keys::BUCKET.into(), b"bucket".to_vec());
        for (k, v) in pairs {
            data.insert(k.to_string(), v.as_bytes().to_vec());
        }
        S3Config::from_secret(&data, None)
    }

    fn msg(pairs: &[(&str, &str)]) -> String {
        secret(pairs).expect_err("should be refused").to_string()
    }

    fn args() -> S3Args {
        S3Args {
            bucket: Some("bucket".into()),
            ..S3Args::default()
        }
    }

    #[test]
    fn secret_defaults() {
        let c = secret(&[("unknown-key", "x")]).unwrap();
        assert_eq!(c.endpoint, "s3.amazonaws.com");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(
            (c.folder.as_str(), c.insecure, c.skip_ssl_verify),
            ("", false, false)
        );
        assert_eq!(
            (c.bucket_lookup, c.proxy.clone()),
            (BucketLookup::Auto, Proxy::Environment)
        );
        assert_eq!((c.access_key, c.endpoint_ca), (None, None));
        // k3s's sample Secret has empty strings: they mean "default".
        assert_eq!(
            secret(&[(keys::ENDPOINT, ""), (keys::PROXY, " ")])
                .unwrap()
                .endpoint,
            "s3.amazonaws.com"
        );
        assert_eq!(msg(&[(keys::BUCKET, " ")]), "etcd-s3-bucket is missing");
    }

    #[test]
    fn secret_all_keys_trimmed() {
        let c = secret(&[
            (keys::ENDPOINT, " minio.local:9000\n"),
            (keys::ENDPOINT_CA, CERT),
            (keys::SKIP_SSL_VERIFY, "TRUE"),
            (keys::ACCESS_KEY, " AK "),
            (keys::SECRET_KEY, "SK\n"),
            (keys::SESSION_TOKEN, "TOK"),
            (keys::BUCKET, " my-bucket "),
            (keys::BUCKET_LOOKUP_TYPE, "Path"),
            (keys::FOLDER, "/a/./b//c/"),
            (keys::REGION, " eu-west-1 "),
            (keys::INSECURE, "False"),
            (keys::TIMEOUT, "1m30s"),
            (keys::PROXY, "http://proxy.local:3128"),
        ])
        .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.bucket.as_str()),
            ("minio.local:9000", "my-bucket")
        );
        assert_eq!(c.endpoint_ca.as_deref(), Some(CERT));
        assert!(c.skip_ssl_verify && !c.insecure);
        assert_eq!(c.access_key.as_deref(), Some("AK"));
        assert_eq!(c.secret_key.as_deref(), Some("SK"));
        assert_eq!(c.session_token.as_deref(), Some("TOK"));
        assert_eq!(
            (c.bucket_lookup, c.folder.as_str()),
            (BucketLookup::Path, "a/b/c")
        );
        assert_eq!(
            (c.region.as_str(), c.timeout),
            ("eu-west-1", Duration::from_secs(90))
        );
        assert_eq!(c.proxy, Proxy::Url("http://proxy.local:3128".into()));
        assert_eq!(
            secret(&[(keys::BUCKET_LOOKUP_TYPE, "dns")])
                .unwrap()
                .bucket_lookup,
            BucketLookup::Dns
        );
        assert_eq!(
            msg(&[(keys::BUCKET_LOOKUP_TYPE, "virtual")]),
            "etcd-s3-bucket-lookup-type \"virtual\" is not one of auto, dns or path"
        );
    }

    #[test]
    fn booleans_are_exact() {
        assert!(secret(&[(keys::INSECURE, "true")]).unwrap().insecure);
        assert_eq!(
            msg(&[(keys::INSECURE, "yes")]),
            "etcd-s3-insecure: \"yes\" is not a boolean (true or false)"
        );
        assert!(msg(&[(keys::SKIP_SSL_VERIFY, "1")]).starts_with("etcd-s3-skip-ssl-verify: \"1\""));
    }

    #[test]
    fn timeouts() {
        for (s, secs) in [
            ("5m", 300.0),
            ("90s", 90.0),
            ("1m30s", 90.0),
            ("2h", 7200.0),
            ("5m0s", 300.0),
            ("1.5h", 5400.0),
            ("300ms", 0.3),
            ("+1s", 1.0),
        ] {
            assert_eq!(
                secret(&[(keys::TIMEOUT, s)]).unwrap().timeout.as_secs_f64(),
                secs,
                "{s}"
            );
        }
        for s in [
            "0",
            "0s",
            "-5m",
            "5",
            "m",
            "5x",
            "1..5s",
            "1.2.3s",
            "5 m",
            "99999999999999999999h",
        ] {
            let m = msg(&[(keys::TIMEOUT, s)]);
            assert!(
                m.starts_with("etcd-s3-timeout ") && m.contains("positive duration"),
                "{s}: {m}"
            );
        }
    }

    #[test]
    fn bucket_names() {
        for b in ["abc", "my.bucket-1", "0ab", &"a".repeat(63)] {
            assert!(secret(&[(keys::BUCKET, b)]).is_ok(), "{b}");
        }
        for b in [
            "ab",
            "My-Bucket",
            "my_bucket",
            "-ab",
            "ab-",
            "a..b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            let m = msg(&[(keys::BUCKET, b)]);
            assert!(
                m.starts_with(&format!(
                    "etcd-s3-bucket {b:?} is not a valid S3 bucket name"
                )),
                "{m}"
            );
        }
    }

    #[test]
    fn endpoints() {
        let ep = |v: &str| secret(&[(keys::ENDPOINT, v)]).map(|c| (c.endpoint, c.insecure));
        assert_eq!(
            ep("https://s3.example.com/").unwrap(),
            ("s3.example.com".into(), false)
        );
        assert_eq!(
            ep("HTTP://minio:9000").unwrap(),
            ("minio:9000".into(), true)
        );
        assert_eq!(ep("[::1]:9000").unwrap(), ("[::1]:9000".into(), false));
        assert_eq!(ep("10.0.0.1").unwrap(), ("10.0.0.1".into(), false));
        let m = msg(&[(keys::ENDPOINT, "host/path")]);
        assert_eq!(
            m,
            "etcd-s3-endpoint \"host/path\" must be host[:port] without a path"
        );
        for (v, want) in [
            ("https://", "the host is empty"),
            (":9000", "the host is empty"),
            ("host:0", "port from 1 to 65535"),
            ("host:70000", "port from 1 to 65535"),
            ("host:", "port from 1 to 65535"),
            ("host:+80", "port from 1 to 65535"),
            (
                "ftp://host",
                "only schemes accepted are http:// and https://",
            ),
            ("::1", "IPv6"),
            ("[::1", "unclosed"),
            ("bad host", "only letters, digits"),
            ("host?x=1", "without a path"),
        ] {
            let m = msg(&[(keys::ENDPOINT, v)]);
            assert!(
                m.starts_with(&format!("etcd-s3-endpoint {v:?}")) && m.contains(want),
                "{v}: {m}"
            );
        }
        let m = msg(&[(keys::ENDPOINT, "https://user:hunter2@host")]);
        assert!(
            m.contains("without user info") && !m.contains("hunter2"),
            "{m}"
        );
    }

    #[test]
    fn scheme_against_insecure() {
        assert!(
            secret(&[(keys::ENDPOINT, "http://m:9000"), (keys::INSECURE, "true")])
                .unwrap()
                .insecure
        );
        assert!(
            !secret(&[(keys::ENDPOINT, "https://m"), (keys::INSECURE, "false")])
                .unwrap()
                .insecure
        );
        assert_eq!(
            msg(&[(keys::ENDPOINT, "http://m:9000"), (keys::INSECURE, "false")]),
            "etcd-s3-endpoint \"http://m:9000\" says http:// but etcd-s3-insecure is false; drop the scheme or change etcd-s3-insecure"
        );
        assert!(
            msg(&[(keys::ENDPOINT, "https://m"), (keys::INSECURE, "true")])
                .contains("says https:// but etcd-s3-insecure is true")
        );
        let cli = S3Args {
            endpoint: "https://m".into(),
            insecure: true,
            ..args()
        };
        assert!(
            S3Config::from_args(&cli)
                .unwrap_err()
                .to_string()
                .contains("--s3-insecure is true")
        );
    }

    #[test]
    fn proxies() {
        let px = |v: &str| secret(&[(keys::PROXY, v)]).map(|c| c.proxy);
        assert_eq!(px("none").unwrap(), Proxy::None);
        assert_eq!(px("NONE").unwrap(), Proxy::None);
        for ok in [
            "http://p:3128",
            "https://p",
            "socks5://[::1]:1080",
            "http://u:pw@p:3128/",
        ] {
            assert_eq!(px(ok).unwrap(), Proxy::Url(ok.into()));
        }
        assert_eq!(
            msg(&[(keys::PROXY, "proxy.local:3128")]),
            "etcd-s3-proxy \"proxy.local:3128\" must be a URL with a scheme, like http://proxy.local:3128"
        );
        // Found by tests/it/bad_input_fuzz.rs: the example must not carry a line break.
        assert_eq!(
            msg(&[(keys::PROXY, "a\nA")]),
            "etcd-s3-proxy \"a\\nA\" must be a URL with a scheme, like http://HOST:PORT"
        );
        for (v, want) in [
            ("ftp://p", "http, https or socks5"),
            ("http://", "with a host"),
            ("http://p:99999", "port"),
            ("http://p:x", "port"),
        ] {
            assert!(msg(&[(keys::PROXY, v)]).contains(want), "{v}");
        }
        let m = msg(&[(keys::PROXY, "user:hunter2@p:3128")]);
        assert!(
            !m.contains("hunter2") && m.contains("<redacted>@p:3128"),
            "{m}"
        );
        let m = msg(&[(keys::PROXY, "ftp://user:hunter2@p")]);
        assert!(!m.contains("hunter2"), "{m}");
        let c = secret(&[(keys::PROXY, "http://user:hunter2@p:3128")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn folders() {
        assert_eq!(secret(&[(keys::FOLDER, "///")]).unwrap().folder, "");
        for f in ["..", "a/../b", "../a", "a\u{0}b"] {
            assert!(
                msg(&[(keys::FOLDER, f)]).contains("without '..' segments"),
                "{f}"
            );
        }
        assert_eq!(secret(&[(keys::FOLDER, "a..b")]).unwrap().folder, "a..b");
    }

    #[test]
    fn endpoint_ca() {
        let ca = |v: &str| secret(&[(keys::ENDPOINT_CA, v)]).map(|c| c.endpoint_ca);
        // Junk around the blocks and non-certificate blocks are dropped.
        let junk = format!(
            "# our CA\n{CERT}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{TINY}"
        );
        assert_eq!(ca(&junk).unwrap(), Some(format!("{CERT}{TINY}")));
        assert_eq!(ca(TINY_B64).unwrap().as_deref(), Some(TINY));
        assert_eq!(
            msg(&[(keys::ENDPOINT_CA, "not a cert")]),
            "etcd-s3-endpoint-ca does not contain a PEM certificate"
        );
        let broken = [
            ("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n", "has no END line"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----",
                "not base64",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                "not base64",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nMAMC\n-----BEGIN X-----\n-----END CERTIFICATE-----",
                "has no END line",
            ),
            (
                "-----BEGIN CERTIFICATE\nMAMCAQE=\n-----END CERTIFICATE-----",
                "not a PEM block start",
            ),
        ];
        for (v, want) in broken {
            let m = msg(&[(keys::ENDPOINT_CA, v)]);
            assert!(
                m.starts_with("etcd-s3-endpoint-ca: ") && m.contains(want),
                "{m}"
            );
        }
    }

    #[test]
    fn endpoint_ca_configmap() {
        let mut data = BTreeMap::new();
        data.insert(keys::BUCKET.to_string(), "bucket".to_string());
        data.insert(keys::ENDPOINT_CA_NAME.to_string(), " my-cas ".to_string());
        assert_eq!(ca_configmap_name(&data).as_deref(), Some("my-cas"));
        let err = S3Config::from_secret(&data, None).unwrap_err();
        assert_eq!(err, S3ConfigError::CaConfigMapMissing("my-cas".into()));
        let cm = BTreeMap::from([
            ("a.pem".to_string(), CERT.to_string()),
            ("b.pem".to_string(), TINY.to_string()),
        ]);
        let c = S3Config::from_secret(&data, Some(&cm)).unwrap();
        assert_eq!(c.endpoint_ca, Some(format!("{CERT}{TINY}")));
        let empty = BTreeMap::from([("a".to_string(), "nothing".to_string())]);
        assert!(S3Config::from_secret(&data, Some(&empty)).is_err());
    }

    #[test]
    fn credentials_come_in_pairs() {
        assert_eq!(
            msg(&[(keys::ACCESS_KEY, "AK")]),
            "etcd-s3-access-key is set but etcd-s3-secret-key is missing"
        );
        assert_eq!(
            msg(&[(keys::SECRET_KEY, "SK")]),
            "etcd-s3-secret-key is set but etcd-s3-access-key is missing"
        );
        assert!(msg(&[(keys::SESSION_TOKEN, "T")]).starts_with("etcd-s3-session-token is set"));
        let mut data = BTreeMap::from([(keys::BUCKET.to_string(), b"bucket".to_vec())]);
        data.insert(keys::SECRET_KEY.to_string(), vec![0xff, b's', b'k']);
        let m = S3Config::from_secret(&data, None).unwrap_err().to_string();
        assert_eq!(m, "etcd-s3-secret-key is not valid UTF-8");
    }

    #[test]
    fn secret_types() {
        assert!(secret_type_ok(consts::SECRET_TYPE) && secret_type_ok(consts::SECRET_TYPE_K3S));
        assert!(!secret_type_ok("Opaque") && check_secret_type(consts::SECRET_TYPE).is_ok());
        let m = check_secret_type("Opaque").unwrap_err().to_string();
        assert!(
            m.starts_with("Secret type \"Opaque\" is not etcdsnapshot.io/s3-config-secret"),
            "{m}"
        );
    }

    #[test]
    fn debug_redacts_credentials() {
        let c = secret(&[
            (keys::ACCESS_KEY, "AKIAEXAMPLE"),
            (keys::SECRET_KEY, "s3cr3t-value"),
            (keys::SESSION_TOKEN, "tok-value"),
            (keys::ENDPOINT_CA, CERT),
        ])
        .unwrap();
        let dbg = format!("{c:?} {c:#?}");
        for secret in ["AKIAEXAMPLE", "s3cr3t-value", "tok-value", "MIIB"] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(dbg.contains("secret_key: Some(\"<redacted>\")"), "{dbg}");
        assert!(format!("{:?}", secret(&[]).unwrap()).contains("secret_key: None"));
    }

    #[test]
    fn urls_keys_and_location() {
        let c = secret(&[
            (keys::ENDPOINT, "minio:9000"),
            (keys::INSECURE, "true"),
            (keys::FOLDER, "k3s/prod"),
            (keys::ACCESS_KEY, "AK"),
            (keys::SECRET_KEY, "SK"),
        ])
        .unwrap();
        assert_eq!(
            (c.scheme(), c.endpoint_url()),
            ("http", "http://minio:9000".to_string())
        );
        assert_eq!(c.object_key("snap-1"), "k3s/prod/snap-1");
        assert_eq!(c.location("snap-1"), "s3://bucket/k3s/prod/snap-1");
        let loc = c.to_location();
        assert_eq!(
            (loc.prefix.as_deref(), loc.insecure, loc.endpoint.as_deref()),
            (Some("k3s/prod"), Some(true), Some("minio:9000"))
        );
        assert!(!serde_json::to_string(&loc).unwrap().contains("SK"));
        let root = secret(&[]).unwrap();
        assert_eq!(
            (root.scheme(), root.object_key("s"), root.location("s")),
            ("https", "s".into(), "s3://bucket/s".into())
        );
        assert_eq!(root.to_location().prefix, None);
    }

    #[test]
    fn path_style() {
        let style = |ep: &str, lookup: &str, bucket: &str, insecure: &str| {
            let pairs = [
                (keys::ENDPOINT, ep),
                (keys::BUCKET_LOOKUP_TYPE, lookup),
                (keys::BUCKET, bucket),
                (keys::INSECURE, insecure),
            ];
            secret(&pairs).unwrap().use_path_style()
        };
        assert!(style("s3.amazonaws.com", "path", "b-1", "false"));
        assert!(!style("minio:9000", "dns", "b-1", "false"));
        for host in [
            "s3.amazonaws.com",
            "s3.eu-west-1.amazonaws.com",
            "s3-us-west-2.amazonaws.com",
            "s3.cn-north-1.amazonaws.com.cn",
            "oss-cn-hangzhou.aliyuncs.com",
            "storage.googleapis.com:443",
        ] {
            assert!(!style(host, "auto", "b-1", "false"), "{host}");
        }
        for host in [
            "minio:9000",
            "s3.example.com",
            "10.0.0.1:9000",
            "amazonaws.com.evil.net",
        ] {
            assert!(style(host, "auto", "b-1", "false"), "{host}");
        }
        // Dotted buckets would break the wildcard certificate over HTTPS.
        assert!(style("s3.amazonaws.com", "auto", "my.bucket", "false"));
        assert!(!style("s3.amazonaws.com", "auto", "my.bucket", "true"));
        assert!(!style(
            "oss-cn-hangzhou.aliyuncs.com",
            "auto",
            "my.bucket",
            "false"
        ));
    }

    #[test]
    fn from_args_defaults_and_flags() {
        let c = S3Config::from_args(&args()).unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.region.as_str(), c.timeout),
            ("s3.amazonaws.com", "us-east-1", Duration::from_secs(300))
        );
        let full = S3Args {
            endpoint: "http://minio:9000".into(),
            access_key: Some("AK".into()),
            secret_key: Some("SK".into()),
            bucket_lookup_type: LookupArg::Dns,
            folder: Some("/x/".into()),
            timeout: "2m".into(),
            proxy: Some("none".into()),
            skip_ssl_verify: true,
            ..args()
        };
        let c = S3Config::from_args(&full).unwrap();
        assert!(c.insecure && c.skip_ssl_verify && c.proxy == Proxy::None);
        assert_eq!(
            (c.bucket_lookup, c.folder.as_str(), c.timeout),
            (BucketLookup::Dns, "x", Duration::from_secs(120))
        );
        let no_bucket = S3Args {
            bucket: None,
            ..args()
        };
        assert_eq!(
            S3Config::from_args(&no_bucket).unwrap_err().to_string(),
            "--s3-bucket is missing"
        );
        let bad = S3Args {
            timeout: "soon".into(),
            ..args()
        };
        assert!(
            S3Config::from_args(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("--s3-timeout \"soon\"")
        );
    }

    #[test]
    fn from_args_ca_items() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, CERT).unwrap();
        let value = format!("{} {TINY_B64}", file.display());
        let c = S3Config::from_args(&S3Args {
            endpoint_ca: Some(value),
            ..args()
        })
        .unwrap();
        assert_eq!(c.endpoint_ca, Some(format!("{CERT}{TINY}")));
        let inline = S3Args {
            endpoint_ca: Some(CERT.into()),
            ..args()
        };
        assert_eq!(
            S3Config::from_args(&inline).unwrap().endpoint_ca.as_deref(),
            Some(CERT)
        );
        let missing = dir.path().join("missing.pem").display().to_string();
        let err = load_ca_items(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "--s3-endpoint-ca: cannot read CA file {missing:?}"
            )),
            "{err}"
        );
        let not_pem = dir.path().join("x.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let args = S3Args {
            endpoint_ca: Some(not_pem.display().to_string()),
            ..args()
        };
        assert_eq!(
            S3Config::from_args(&args).unwrap_err().to_string(),
            "--s3-endpoint-ca does not contain a PEM certificate"
        );
    }

    #[test]
    fn schedule_inline() {
        let spec = S3Storage {
            enabled: true,
            endpoint: Some("minio:9000".into()),
            bucket: Some("bucket".into()),
            bucket_lookup: Some(BucketLookup::Path),
            folder: Some("f".into()),
            insecure: Some(true),
            timeout: Some("10m".into()),
            endpoint_ca: Some(TINY_B64.into()),
            ..S3Storage::default()
        };
        let c = S3Config::from_schedule_inline(&spec).unwrap();
        assert_eq!(
            (c.endpoint_url(), c.object_key("s")),
            ("http://minio:9000".into(), "f/s".into())
        );
        assert_eq!(
            (c.access_key, c.timeout, c.endpoint_ca.as_deref()),
            (None, Duration::from_secs(600), Some(TINY))
        );
        let none = S3Storage::default();
        assert_eq!(
            S3Config::from_schedule_inline(&none)
                .unwrap_err()
                .to_string(),
            "spec.s3.bucket is missing"
        );
        let bad = S3Storage {
            endpoint: Some("https://m".into()),
            ..spec.clone()
        };
        assert!(
            S3Config::from_schedule_inline(&bad)
                .unwrap_err()
                .to_string()
                .contains("spec.s3.insecure is true")
        );
        assert!(clashing_inline_fields(&spec).is_empty());
        let both = S3Storage {
            config_secret_ref: Some(SecretRef {
                name: "s".into(),
                namespace: None,
            }),
            proxy: Some("none".into()),
            ..spec
        };
        let clash = clashing_inline_fields(&both);
        assert_eq!(
            clash,
            [
                "endpoint",
                "endpointCA",
                "bucket",
                "bucketLookup",
                "folder",
                "insecure",
                "timeout",
                "proxy"
            ]
        );
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_b64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_b64("aGV5\n").as_deref(), Some(&b"hey"[..]));
        for bad in ["", "aGk", "a===", "aG=k", "****"] {
            assert_eq!(decode_b64(bad), None, "{bad}");
        }
    }

    fn any_key() -> impl Strategy<Value = String> {
        let known = [
            keys::ENDPOINT,
            keys::ENDPOINT_CA,
            keys::SKIP_SSL_VERIFY,
            keys::ACCESS_KEY,
            keys::SESSION_TOKEN,
            keys::BUCKET,
            keys::BUCKET_LOOKUP_TYPE,
            keys::FOLDER,
            keys::REGION,
            keys::INSECURE,
            keys::TIMEOUT,
            keys::PROXY,
        ];
        prop_oneof![
            proptest::sample::select(known.to_vec()).prop_map(String::from),
            "[a-z-]{0,12}"
        ]
    }

    fn any_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<String>().prop_map(String::into_bytes),
            "(https?://)?[a-z0-9.:@/\\[\\]-]{0,20}".prop_map(String::into_bytes),
            "[0-9.]{0,4}(h|m|s|ms|µs)[0-9]{0,3}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn from_secret_never_panics_nor_leaks(
            map in proptest::collection::btree_map(any_key(), any_value(), 0..10),
            tail in "[A-Za-z0-9/+]{16}",
            with_access in any::<bool>(),
        ) {
            let sk = format!("SK{tail}");
            let mut data = map.clone();
            let _ = S3Config::from_secret(&data, None);
            data.insert(keys::SECRET_KEY.to_string(), format!(" {sk} ").into_bytes());
            if with_access {
                data.insert(keys::ACCESS_KEY.to_string(), b"AK".to_vec());
            }
            let cm = BTreeMap::from([("x".to_string(), String::from_utf8_lossy(&map.values().flatten().copied().collect::<Vec<u8>>()).into_owned())]);
            for result in [S3Config::from_secret(&data, None), S3Config::from_secret(&data, Some(&cm))] {
                match result {
                    Err(e) => prop_assert!(!e.to_string().contains(&sk), "{e}"),
                    Ok(c) => {
                        let dbg = format!("{c:?}");
                        prop_assert!(!dbg.contains(&sk));
                    }
                }
            }
        }
    }
}
