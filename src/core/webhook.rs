//! Standard Webhooks signing for the final callback: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature` (`v1,<base64
//! HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, space
//! separated, so a receiver verifies during a rotation with either).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Checks a `final_callback_url`: absolute https, or http to a loopback host
/// (or anywhere when `allow_http`), and no credentials in it — they would be
/// stored with the run and shown in its deliveries.
pub fn check_receiver_url(text: &str, allow_http: bool) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("final_callback_url is not an absolute URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("final_callback_url must not carry credentials (user:password@)".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("final_callback_url has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(url.into()),
        "http" if loopback || allow_http => Ok(url.into()),
        "http" => Err(
            "final_callback_url must be https (http only for loopback hosts, or when \
             ALLOW_HTTP_CALLBACKS=true)"
                .into(),
        ),
        other => Err(format!("final_callback_url must be https, not {other}:")),
    }
}

/// What a delivery list shows of the receiver: no query string or fragment,
/// where a token might sit.
pub fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.into()
        }
        Err(_) => String::new(),
    }
}

/// Decodes a `whsec_<base64>` secret into its key bytes.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let encoded = text.trim().strip_prefix("whsec_").ok_or_else(|| {
        "WEBHOOK_SECRET must look like whsec_<base64> (the Standard Webhooks format)".to_string()
    })?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "WEBHOOK_SECRET: the part after whsec_ is not base64".to_string())?;
    if key.len() < 16 {
        return Err("WEBHOOK_SECRET: the key must be at least 16 bytes".into());
    }
    Ok(key)
}

/// The `webhook-signature` header value for `body`, signed with every key.
pub fn signature(keys: &[Vec<u8>], id: &str, timestamp_secs: u64, body: &str) -> String {
    let mut header = String::new();
    for key in keys {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(format!("{id}.{timestamp_secs}.").as_bytes());
        mac.update(body.as_bytes());
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        header.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example() {
        // The example in the Standard Webhooks specification.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn receiver_urls() {
        for ok in [
            "https://hooks.example.com/arcrun?k=1",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/x",
        ] {
            assert!(check_receiver_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/hook",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "ftp://example.com/",
            "javascript:alert(1)",
            "/relative",
            "",
            "http://10.0.0.1/internal",
        ] {
            assert!(check_receiver_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_receiver_url("http://example.com/hook", true).is_ok());
        assert_eq!(
            shown_url("https://h.test/p?token=s3cret#f"),
            "https://h.test/p"
        );
    }

    #[test]
    fn rotation_signs_with_both_and_bad_secrets_are_refused() {
        let a = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = vec![7u8; 32];
        let both = signature(&[a.clone(), b], "id", 1, "{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.starts_with(&signature(&[a], "id", 1, "{}")));
        for bad in ["MfKQ9r8GKYqrTwjU", "whsec_***", "whsec_c2hvcnQ="] {
            assert!(parse_secret(bad).is_err(), "{bad}");
        }
    }
}
