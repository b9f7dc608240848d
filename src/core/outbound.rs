//! Why an outbound request (a component call, a status poll, a final
//! callback) got no answer, told from what the runtime's `fetch` threw and
//! what the engine knows of the request: its URL, and whether its own timer
//! fired.
//!
//! workerd says little. Measured against it (`tests/e2e/outbound.test.mjs`):
//!
//! - a refused connection, a connection reset, and one closed before the
//!   answer all throw `Network connection lost.` — one message for the three;
//! - a host name that does not resolve, and a TLS handshake that fails (an
//!   `https` URL to a plain-HTTP server), both throw
//!   `internal error; reference = …` — one message for the two;
//! - a request the engine aborts at its deadline throws `AbortError`, but the
//!   engine knows its own timer fired and never reads that.
//!
//! So what tells DNS from TLS is the URL: an `http` URL has no handshake, and
//! a host written as an IP address has no lookup. What cannot be told apart
//! is named as such, never guessed.

use super::protocol::CallFailure;

/// The runtime's words for a connection that failed or was lost before an
/// answer: refused, reset, closed early.
const CONNECTION_LOST: &str = "Network connection lost";

/// The runtime's words for a failure it keeps to itself: for a fetch, a DNS
/// lookup or a TLS handshake that failed.
const INTERNAL_ERROR: &str = "internal error";

/// What went wrong, and the message to record: the error as the runtime put
/// it, explained. `error` is the thrown error's text.
pub fn classify(url: &str, error: &str) -> (CallFailure, String) {
    let target = Target::of(url);
    let said = error.trim();
    let said = said.strip_prefix("Error: ").unwrap_or(said);
    if said.contains(CONNECTION_LOST) {
        return (
            CallFailure::ConnectionFailed,
            format!(
                "connection to {} failed before an answer: refused, reset or closed early (the \
                 runtime reports these alike: {said})",
                target.shown
            ),
        );
    }
    if said.contains(INTERNAL_ERROR) {
        return match (target.tls, target.named) {
            (false, true) => (
                CallFailure::DnsFailure,
                format!(
                    "the host name {} did not resolve (the runtime reported: {said})",
                    target.host
                ),
            ),
            (true, false) => (
                CallFailure::TlsFailure,
                format!(
                    "the TLS handshake with {} failed: is it serving https? (the runtime \
                     reported: {said})",
                    target.shown
                ),
            ),
            (true, true) => (
                CallFailure::ConnectionFailed,
                format!(
                    "the host name {} did not resolve, or the TLS handshake with it failed (the \
                     runtime reports both alike: {said})",
                    target.host
                ),
            ),
            // Neither a lookup nor a handshake: nothing to explain it by.
            (false, false) => (
                CallFailure::ConnectionFailed,
                format!("request to {} failed: {said}", target.shown),
            ),
        };
    }
    (
        CallFailure::ConnectionFailed,
        format!("request to {} failed: {said}", target.shown),
    )
}

/// The message of a request the engine gave up on at its deadline.
pub fn timed_out(timeout_ms: u64) -> (CallFailure, String) {
    (
        CallFailure::Timeout,
        format!("timed out after {timeout_ms} ms"),
    )
}

/// What the URL says about the request: no path, query or credentials are
/// shown, only where it went.
struct Target {
    /// `host` or `host:port`, as written.
    shown: String,
    host: String,
    /// `https`: there was a handshake.
    tls: bool,
    /// A host name, not an IP address: there was a lookup.
    named: bool,
}

impl Target {
    fn of(text: &str) -> Self {
        let Ok(url) = url::Url::parse(text) else {
            return Self {
                shown: "the component".into(),
                host: "the component".into(),
                tls: false,
                named: false,
            };
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let shown = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Self {
            shown,
            named: matches!(url.host(), Some(url::Host::Domain(_))),
            tls: url.scheme() == "https",
            host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOST: &str = "Error: Network connection lost.";
    const INTERNAL: &str = "Error: internal error; reference = 0hv585efv03m1f5slijos053";

    #[test]
    fn a_lost_connection_is_named_for_what_it_may_be() {
        let (code, message) = classify("http://127.0.0.1:9/x?token=secret", LOST);
        assert_eq!(code, CallFailure::ConnectionFailed);
        assert_eq!(
            message,
            "connection to 127.0.0.1:9 failed before an answer: refused, reset or closed early \
             (the runtime reports these alike: Network connection lost.)"
        );
    }

    #[test]
    fn the_url_tells_a_lookup_from_a_handshake() {
        let dns = classify("http://nope.invalid/run", INTERNAL);
        assert_eq!(dns.0, CallFailure::DnsFailure);
        assert!(dns
            .1
            .starts_with("the host name nope.invalid did not resolve"));
        let tls = classify("https://127.0.0.1:8443/run", INTERNAL);
        assert_eq!(tls.0, CallFailure::TlsFailure);
        assert!(tls
            .1
            .starts_with("the TLS handshake with 127.0.0.1:8443 failed"));
        let either = classify("https://nope.invalid/run", INTERNAL);
        assert_eq!(either.0, CallFailure::ConnectionFailed);
        assert!(either.1.contains("did not resolve, or the TLS handshake"));
        let neither = classify("http://[::1]:8080/", INTERNAL);
        assert_eq!(neither.0, CallFailure::ConnectionFailed);
        assert!(neither
            .1
            .starts_with("request to [::1]:8080 failed: internal error"));
    }

    #[test]
    fn anything_else_keeps_the_runtimes_words() {
        let (code, message) = classify("https://example.com/", "TypeError: Too many subrequests.");
        assert_eq!(code, CallFailure::ConnectionFailed);
        assert_eq!(
            message,
            "request to example.com failed: TypeError: Too many subrequests."
        );
        assert_eq!(timed_out(2000).1, "timed out after 2000 ms");
        assert_eq!(timed_out(2000).0.code(), "timeout");
    }
}
