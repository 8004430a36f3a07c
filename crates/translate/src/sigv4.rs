//! AWS Signature Version 4 for JSON POST requests (what Bedrock Runtime takes), and its
//! verification (what the simulator does).
//!
//! Only what a header-signed request needs: canonical request, string to sign, the derived
//! signing key and the `Authorization` header. Paths must already be URI-encoded once (as
//! they go on the wire); for every service but S3 the canonical URI encodes them again.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credentials and scope of a signature.
#[derive(Clone)]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

/// One request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path as sent, URI-encoded once (`/model/anthropic.claude%3A0/converse`).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Other headers to sign (lower-case names), e.g. `content-type`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// `YYYYMMDD'T'HHMMSS'Z'`.
    pub amz_date: &'a str,
}

/// The headers to add to a request: `x-amz-date`, `x-amz-security-token` (with a session
/// token), `x-amz-content-sha256` and `authorization`.
pub fn sign(credentials: &Credentials<'_>, request: &Request<'_>) -> Vec<(&'static str, String)> {
    let payload_hash = hex(&Sha256::digest(request.body));
    let mut headers: Vec<(String, String)> = vec![
        ("host".to_owned(), request.host.to_owned()),
        ("x-amz-date".to_owned(), request.amz_date.to_owned()),
        ("x-amz-content-sha256".to_owned(), payload_hash.clone()),
    ];
    if let Some(token) = credentials.session_token {
        headers.push(("x-amz-security-token".to_owned(), token.to_owned()));
    }
    for (name, value) in request.headers {
        headers.push((name.to_ascii_lowercase(), (*value).to_owned()));
    }
    let signature = signature(credentials, request, &headers, &payload_hash);
    let signed = signed_header_names(&headers);
    let date = &request.amz_date[..8.min(request.amz_date.len())];
    let mut out = vec![
        ("x-amz-date", request.amz_date.to_owned()),
        ("x-amz-content-sha256", payload_hash),
        (
            "authorization",
            format!(
                "{ALGORITHM} Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={signed}, Signature={signature}",
                credentials.access_key_id, credentials.region, credentials.service
            ),
        ),
    ];
    if let Some(token) = credentials.session_token {
        out.push(("x-amz-security-token", token.to_owned()));
    }
    out
}

/// The hex signature over `headers` (name, value) with the given payload hash.
pub fn signature(
    credentials: &Credentials<'_>,
    request: &Request<'_>,
    headers: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), collapse(value)))
        .collect();
    sorted.sort();
    let canonical_headers: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = signed_header_names(headers);
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
        request.method,
        canonical_uri(request.path, credentials.service),
        canonical_query(request.query),
    );
    let date = &request.amz_date[..8.min(request.amz_date.len())];
    let scope = format!(
        "{date}/{}/{}/aws4_request",
        credentials.region, credentials.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        request.amz_date,
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [credentials.region, credentials.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, string_to_sign.as_bytes()))
}

fn signed_header_names(headers: &[(String, String)]) -> String {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names.join(";")
}

/// What the `Authorization` header of a signed request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` header.
pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix(ALGORITHM)?.trim();
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    Some(Authorization {
        access_key_id: scope.next()?.to_owned(),
        date: scope.next()?.to_owned(),
        region: scope.next()?.to_owned(),
        service: scope.next()?.to_owned(),
        signed_headers: signed?.split(';').map(str::to_owned).collect(),
        signature: signature?.to_owned(),
    })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 15) as usize] as char);
    }
    out
}

/// Trims and folds runs of spaces, as the canonical header value requires.
fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3986 encoding of everything but unreserved characters.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn canonical_uri(path: &str, service: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    if service == "s3" {
        return path.to_owned();
    }
    path.split('/')
        .map(|segment| uri_encode(segment, false))
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDD'T'HHMMSS'Z'` for Unix seconds.
pub fn amz_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds = unix_seconds % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        seconds / 3_600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `get-vanilla` case of AWS's published Signature Version 4 test suite.
    #[test]
    fn matches_the_aws_test_suite() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "service",
        };
        let request = Request {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: "",
            headers: &[],
            body: b"",
            amz_date: "20150830T123600Z",
        };
        let headers = vec![
            ("host".to_owned(), "example.amazonaws.com".to_owned()),
            ("x-amz-date".to_owned(), "20150830T123600Z".to_owned()),
        ];
        let payload = hex(&Sha256::digest(b""));
        assert_eq!(
            signature(&credentials, &request, &headers, &payload),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn signed_headers_parse_back() {
        let credentials = Credentials {
            access_key_id: "AKID",
            secret_access_key: "secret",
            session_token: Some("token"),
            region: "eu-west-1",
            service: "bedrock",
        };
        let request = Request {
            method: "POST",
            host: "127.0.0.1:9000",
            path: "/model/anthropic.claude-3-haiku%3A0/converse",
            query: "",
            headers: &[("content-type", "application/json")],
            body: b"{}",
            amz_date: "20260101T000000Z",
        };
        let signed = sign(&credentials, &request);
        let authorization = signed.iter().find(|(n, _)| *n == "authorization").unwrap();
        let parsed = parse_authorization(&authorization.1).unwrap();
        assert_eq!(parsed.region, "eu-west-1");
        assert_eq!(
            parsed.signed_headers,
            [
                "content-type",
                "host",
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-security-token"
            ]
        );
        assert_eq!(
            canonical_uri(request.path, "bedrock"),
            "/model/anthropic.claude-3-haiku%253A0/converse"
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(1_709_164_800), "20240229T000000Z");
    }
}
