//! Why a connection failed, in a person's words.
//!
//! Network libraries wrap the cause several layers deep (`tonic::transport::Error(Transport,
//! ConnectError(... Os { code: 111, kind: ConnectionRefused ... }))`); their `Debug` output is
//! for the debug log. [`Cause::of`] walks the error chain and finds what happened; its
//! `Display` is a short phrase ("connection refused") for the one line a person reads.

use std::error::Error;
use std::fmt;
use std::io::ErrorKind;

/// What went wrong on the way to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address.
    Refused,
    /// No answer in time.
    TimedOut,
    /// The host name does not resolve.
    Dns,
    /// The server closed or reset the connection.
    Closed,
    /// The server's TLS certificate is not trusted (rustls says why: `UnknownIssuer`, ...).
    Untrusted(String),
    /// The server refused our TLS connection with an alert (`CertificateRequired`, ...).
    TlsRefused(String),
    /// The server answered something that is not TLS (a plain HTTP server).
    NotTls,
    /// The server closed the connection during the TLS handshake.
    HandshakeClosed,
    /// Anything else: the innermost message.
    Other(String),
}

impl Cause {
    /// The cause of `err`, from the first error in its chain that says.
    pub fn of(err: &(dyn Error + 'static)) -> Cause {
        let chain: Vec<&(dyn Error + 'static)> = chain(err).collect();
        for e in &chain {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                match tls {
                    rustls::Error::InvalidCertificate(c) => {
                        return Cause::Untrusted(format!("{c:?}"));
                    }
                    rustls::Error::AlertReceived(alert) => {
                        return Cause::TlsRefused(format!("{alert:?}"));
                    }
                    rustls::Error::InvalidMessage(_) => return Cause::NotTls,
                    _ => {}
                }
            }
        }
        for e in &chain {
            let text = e.to_string().to_lowercase();
            if text.contains("tls handshake eof") {
                return Cause::HandshakeClosed;
            }
            if text.contains("dns error") || text.contains("failed to lookup address") {
                return Cause::Dns;
            }
            if text == "connection closed" || text.contains("connection closed before message") {
                return Cause::Closed;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    ErrorKind::ConnectionRefused => return Cause::Refused,
                    ErrorKind::TimedOut => return Cause::TimedOut,
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof => return Cause::Closed,
                    _ => {}
                }
            }
            if text.contains("timed out") || text.contains("deadline has elapsed") {
                return Cause::TimedOut;
            }
        }
        let innermost = chain
            .iter()
            .rev()
            .map(|e| e.to_string())
            .find(|t| !t.trim().is_empty())
            .unwrap_or_default();
        Cause::Other(one_line(&innermost))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused => write!(f, "connection refused"),
            Cause::TimedOut => write!(f, "the connection timed out"),
            Cause::Dns => write!(f, "the host name does not resolve"),
            Cause::Closed => write!(f, "the server closed the connection"),
            Cause::Untrusted(why) => write!(f, "its TLS certificate is not trusted ({why})"),
            Cause::TlsRefused(alert) => write!(f, "it refused the TLS connection ({alert})"),
            Cause::NotTls => write!(f, "it does not speak TLS"),
            Cause::HandshakeClosed => {
                write!(f, "it closed the connection during the TLS handshake")
            }
            Cause::Other(text) => write!(f, "{text}"),
        }
    }
}

/// Every error in the chain, looking inside `io::Error`s (whose `source` skips their payload).
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
        None => e.source(),
    })
}

/// `text` on one line, without `Debug` dumps of library types: everything from the first
/// type-like word followed by `{` or `(` (`Os {`, `tonic::transport::Error(`) is cut.
pub fn one_line(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ");
    let mut cut = None;
    for (i, c) in flat.char_indices() {
        if c != '{' && c != '(' {
            continue;
        }
        let before = flat[..i].trim_end();
        let start = before
            .rfind(|ch: char| !ch.is_alphanumeric() && ch != '_' && ch != ':')
            .map_or(0, |p| p + 1);
        let word = &before[start..];
        let last = word.rsplit("::").next().unwrap_or_default();
        if last.chars().next().is_some_and(char::is_uppercase) {
            cut = Some(start);
            break;
        }
    }
    let mut kept = match cut {
        Some(i) => &flat[..i],
        None => flat.as_str(),
    }
    .trim();
    loop {
        let before = kept;
        kept = kept.trim_end_matches([':', ',', ' ']);
        kept = kept.strip_suffix("source").unwrap_or(kept);
        if kept == before {
            break;
        }
    }
    kept.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn the_cause_is_found_however_deep() {
        let refused = Wrap(
            "transport error",
            Box::new(std::io::Error::other(Wrap(
                "tcp connect error",
                Box::new(std::io::Error::from(ErrorKind::ConnectionRefused)),
            ))),
        );
        assert_eq!(Cause::of(&refused), Cause::Refused);
        assert_eq!(Cause::of(&refused).to_string(), "connection refused");
        let eof = Wrap(
            "error trying to connect",
            Box::new(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "tls handshake eof",
            )),
        );
        assert_eq!(Cause::of(&eof), Cause::HandshakeClosed);
        let tls = Wrap(
            "connect",
            Box::new(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        );
        assert_eq!(Cause::of(&tls), Cause::Untrusted("UnknownIssuer".into()));
        let other = Wrap(
            "request failed",
            Box::new(std::io::Error::other("quota exceeded")),
        );
        assert_eq!(Cause::of(&other), Cause::Other("quota exceeded".into()));
    }

    #[test]
    fn debug_dumps_are_cut_from_one_line_messages() {
        assert_eq!(
            one_line(
                "tcp connect error, source: tonic::transport::Error(Transport, ConnectError(Os { code: 111 }))"
            ),
            "tcp connect error"
        );
        assert_eq!(one_line("io error: Kind(ConnectionReset)"), "io error");
        assert_eq!(
            one_line("bucket (eu) is full\nretry"),
            "bucket (eu) is full retry"
        );
    }
}
