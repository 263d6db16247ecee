//! Where logs go and how they look.
//!
//! - `controller` and `agent` (long-running processes read through `kubectl logs` and log
//!   collectors): one line per event with a timestamp, level, target and fields, level `info`.
//! - Every other subcommand (a person at a terminal or a cron job): results on stdout, and on
//!   stderr only what a person needs, in the same shape as the final `error:` line: `warning:
//!   could not abort the S3 multipart upload (key=..., error=...)`, no timestamp, no module path;
//!   level `warn`. `--debug` (or `--log-level`) adds this program's debug lines, which carry the
//!   library error chains that the one-line messages leave out.
//! - `--log FILE` (k3s's flag) appends the logs to FILE in the timestamped form instead, and
//!   `--alsologtostderr` keeps them on stderr too.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Filter of `--debug`: this program's debug lines, only warnings from the libraries.
pub const DEBUG_FILTER: &str = "warn,etcd_snapshot=debug";

/// Default filter of the CLI subcommands: this program's warnings only. A library's own log
/// lines (kube's "failed with error ...") would read as a second error next to the one line
/// that says what failed.
pub const CLI_FILTER: &str = "etcd_snapshot=warn";

/// How to log.
#[derive(Debug, Clone)]
pub struct LogSettings<'a> {
    /// `EnvFilter` directives.
    pub filter: &'a str,
    /// Operator process (timestamped lines) or CLI (person-readable lines).
    pub operator: bool,
    /// `--log FILE`.
    pub file: Option<&'a Path>,
    /// `--alsologtostderr`.
    pub also_stderr: bool,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("--log-level {filter:?}: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// Parser message.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log file cannot be opened.
    #[error("--log {path}: cannot open it for writing: {source}")]
    File {
        /// Path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Install the global subscriber.
pub fn init(settings: &LogSettings<'_>) -> Result<(), LogError> {
    let filter = tracing_subscriber::EnvFilter::try_new(settings.filter).map_err(|source| {
        LogError::Filter {
            filter: settings.filter.to_string(),
            source,
        }
    })?;
    let file = match settings.file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::File {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let to_stderr = file.is_none() || settings.also_stderr;
    let ansi = std::io::stderr().is_terminal();
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
    });
    let operator_layer = (to_stderr && settings.operator).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    let cli_layer = (to_stderr && !settings.operator).then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(PersonFormat)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(operator_layer)
        .with(cli_layer)
        .init();
    Ok(())
}

/// `warning: message (field=value, ...)`: the CLI's log lines.
struct PersonFormat;

impl<S, N> FormatEvent<S, N> for PersonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = PersonLine::default();
        event.record(&mut line);
        writeln!(
            writer,
            "{}",
            line.render(*event.metadata().level(), event.metadata().target())
        )
    }
}

/// The message and fields of one event.
#[derive(Default)]
struct PersonLine {
    message: String,
    fields: Vec<String>,
}

impl PersonLine {
    fn render(&self, level: Level, target: &str) -> String {
        let word = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        // Lines of libraries (shown with --debug or --log-level) say where they come from;
        // this program's need no module path.
        let mut out = if target.starts_with("etcd_snapshot") {
            format!("{word}: {}", self.message)
        } else {
            format!("{word}: [{target}] {}", self.message)
        };
        if !self.fields.is_empty() {
            out.push_str(&format!(" ({})", self.fields.join(", ")));
        }
        out
    }
}

impl Visit for PersonLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push(format!("{}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_lines_read_like_the_error_line() {
        let line = PersonLine {
            message: "could not abort the S3 multipart upload".into(),
            fields: vec!["key=prod/x".into(), "error=S3 is down".into()],
        };
        assert_eq!(
            line.render(Level::WARN, "etcd_snapshot::storage::s3"),
            "warning: could not abort the S3 multipart upload (key=prod/x, error=S3 is down)"
        );
        let bare = PersonLine {
            message: "connecting".into(),
            fields: vec![],
        };
        assert_eq!(
            bare.render(Level::DEBUG, "hyper_util::client"),
            "debug: [hyper_util::client] connecting"
        );
        assert_eq!(
            bare.render(Level::DEBUG, "etcd_snapshot::snapshot"),
            "debug: connecting"
        );
        assert_eq!(
            bare.render(Level::ERROR, "kube_client::client"),
            "error: [kube_client::client] connecting"
        );
    }
}
