//! A real `moto_server` (the AWS mock, PyPI `moto[server]`) on a free loopback port, for the
//! IAM join: it answers STS `AssumeRole` and `GetCallerIdentity` like AWS does, in XML.
//!
//! moto does not check SigV4 signatures: it routes a request to a service by the credential
//! scope of its `Authorization` header (`.../us-east-1/sts/aws4_request`; without one, a
//! `POST /` lands on S3), and answers `GetCallerIdentity` for whatever access key id that scope
//! names. An access key id that `AssumeRole` handed out is the assumed role's session
//! (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`); any other is moto's default user
//! (`arn:aws:sts::123456789012:user/moto`). The role need not exist in moto's IAM first, and
//! its account is the one the role ARN names. Signatures are tested with known-answer tests in
//! `crates/join`, not here.
//!
//! The binary is `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server` (what `tests/test.sh`
//! installs), else `moto_server` on `PATH`.
//!
//! ```no_run
//! let moto = machine_id_e2e::moto::Moto::start();
//! let creds = moto.assume_role(
//!     "arn:aws:iam::123456789012:role/teleport-bot-role",
//!     "i-0123456789abcdef0",
//! );
//! let (account, arn) = moto.caller_identity(&creds.access_key_id);
//! assert_eq!(account, "123456789012");
//! assert_eq!(arn, "arn:aws:sts::123456789012:assumed-role/teleport-bot-role/i-0123456789abcdef0");
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's account when nothing else is named (`MOTO_ACCOUNT_ID` is removed from its
/// environment so that this always holds).
pub const MOTO_DEFAULT_ACCOUNT: &str = "123456789012";

/// How long moto may take to answer after it starts (it takes about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many ports to try when moto cannot bind the one picked (another process took it).
const START_ATTEMPTS: usize = 5;
/// How long one request to moto may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A plausible date for the `X-Amz-Date` header and the credential scope (moto reads neither).
const AMZ_DATE: &str = "20260101T000000Z";

/// A running `moto_server`, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

/// Temporary credentials from STS `AssumeRole`. `Debug` never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsSessionCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
}

impl std::fmt::Debug for AwsSessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .finish()
    }
}

/// What moto answered: status code and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body (moto closes the connection after each answer).
    pub body: String,
}

/// The `moto_server` to run: `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`, else
/// `moto_server` on `PATH`; panics saying how to install it when there is none.
pub fn moto_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MOTO_SERVER={} does not exist; run tests/test.sh, or `python3 -m venv .venv && \
             .venv/bin/pip install 'moto[server]'` in the workspace and unset MOTO_SERVER",
            p.display()
        );
        return p;
    }
    let venv = crate::workspace_root().join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("moto_server");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "moto_server not found (not in $MOTO_SERVER, {}, nor on PATH): run tests/test.sh, or in the \
         workspace `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'`",
        venv.display()
    );
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port and waits until it answers.
    pub fn start() -> Self {
        let bin = moto_server_path();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin) {
                Ok(moto) => return moto,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "moto_server ({}) did not start in {START_ATTEMPTS} attempts:\n{}",
            bin.display(),
            failures.join("\n---\n")
        );
    }

    /// One attempt on one port: `Err` with the reason and moto's log when it exited or did not
    /// answer in time.
    fn try_start(bin: &std::path::Path) -> Result<Self, String> {
        let port = crate::guide::free_port();
        let log = tempfile::Builder::new()
            .prefix("moto-")
            .suffix(".log")
            .tempfile()
            .map_err(|e| format!("moto log file: {e}"))?;
        let out = log
            .as_file()
            .try_clone()
            .map_err(|e| format!("moto log file: {e}"))?;
        let err = log
            .as_file()
            .try_clone()
            .map_err(|e| format!("moto log file: {e}"))?;
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("MOTO_ACCOUNT_ID")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut moto = Self { child, port, log };
        let started = Instant::now();
        // Werkzeug logs this line once it has bound the port: an answer before it would come
        // from another process that took the port.
        let bound = format!("Running on http://127.0.0.1:{port}");
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!(
                    "moto_server on port {port} exited ({status}); its log:\n{}",
                    moto.log()
                ));
            }
            if moto.log().contains(&bound)
                && let Ok(answer) = moto.request("GET", "/", &[], "")
                && answer.status == 200
            {
                return Ok(moto);
            }
            if started.elapsed() > READY_TIMEOUT {
                // Dropping `moto` kills the process.
                return Err(format!(
                    "moto_server on port {port} did not answer in {READY_TIMEOUT:?}; its log:\n{}",
                    moto.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What moto logged so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<HttpAnswer, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)
            .map_err(|e| format!("connecting to moto at {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("sending to moto: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("reading moto's answer: {e}"))?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("moto's answer has no end of headers: {raw:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("moto's answer has no status line: {head:?}"))?;
        // Werkzeug sends a Content-Length and closes; it does not chunk these answers.
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err(format!(
                "moto answered chunked, which this client does not read: {head}"
            ));
        }
        Ok(HttpAnswer {
            status,
            body: body.to_string(),
        })
    }

    /// A form-encoded `POST /` to AWS query API `service` (`sts`, `iam`) as `access_key_id`.
    /// The signature is a placeholder: moto only reads the credential scope.
    pub fn query_api(&self, service: &str, access_key_id: &str, params: &[(&str, &str)]) -> String {
        let body = params
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={access_key_id}/{}/us-east-1/{service}/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={}",
            &AMZ_DATE[..8],
            "0".repeat(64)
        );
        let headers = [
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("X-Amz-Date", AMZ_DATE),
            ("Authorization", authorization.as_str()),
        ];
        let answer = self
            .request("POST", "/", &headers, &body)
            .unwrap_or_else(|e| panic!("{service} {body}: {e}; moto's log:\n{}", self.log()));
        assert_eq!(
            answer.status,
            200,
            "{service} {body}: moto answered {}:\n{}\nmoto's log:\n{}",
            answer.status,
            answer.body,
            self.log()
        );
        answer.body
    }

    /// STS `AssumeRole` of `role_arn` as session `session_name`, checked with
    /// `GetCallerIdentity` signed with the new access key id: moto must say it is
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub fn assume_role(&self, role_arn: &str, session_name: &str) -> AwsSessionCredentials {
        let body = self.query_api(
            "sts",
            "AKIDEXAMPLE",
            &[
                ("Action", "AssumeRole"),
                ("RoleArn", role_arn),
                ("RoleSessionName", session_name),
                ("Version", "2011-06-15"),
            ],
        );
        let field = |tag: &str| {
            xml_text(&body, tag)
                .unwrap_or_else(|| panic!("AssumeRole answer without <{tag}>:\n{body}"))
        };
        let creds = AwsSessionCredentials {
            access_key_id: field("AccessKeyId"),
            secret_access_key: field("SecretAccessKey"),
            session_token: field("SessionToken"),
        };
        let expected = assumed_role_arn(role_arn, session_name);
        assert_eq!(field("Arn"), expected, "AssumeRole's AssumedRoleUser");
        let (_, arn) = self.caller_identity(&creds.access_key_id);
        assert_eq!(
            arn, expected,
            "GetCallerIdentity as the assumed role's access key id"
        );
        creds
    }

    /// STS `GetCallerIdentity` as `access_key_id`: `(account, arn)`.
    pub fn caller_identity(&self, access_key_id: &str) -> (String, String) {
        let body = self.query_api(
            "sts",
            access_key_id,
            &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        );
        let field = |tag: &str| {
            xml_text(&body, tag)
                .unwrap_or_else(|| panic!("GetCallerIdentity answer without <{tag}>:\n{body}"))
        };
        (field("Account"), field("Arn"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION` for role
/// `arn:aws:iam::ACCOUNT:role[/path]/NAME`.
pub fn assumed_role_arn(role_arn: &str, session_name: &str) -> String {
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    assert!(
        parts.len() == 6 && parts[5].starts_with("role/"),
        "not a role ARN: {role_arn}"
    );
    let name = parts[5].rsplit('/').next().unwrap_or_default();
    format!(
        "arn:{}:sts::{}:assumed-role/{name}/{session_name}",
        parts[1], parts[4]
    )
}

/// The text of the first `<tag>...</tag>` in `xml`, entities decoded; enough for AWS query
/// API answers (no attributes on these elements, no CDATA).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(
        xml[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `application/x-www-form-urlencoded` value: unreserved characters as they are, the rest
/// percent-encoded (as AWS's query API expects).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_arn_takes_the_account_and_the_last_path_segment() {
        assert_eq!(
            assumed_role_arn("arn:aws:iam::111111111111:role/ops/teleport-bot-role", "s1"),
            "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/s1"
        );
    }

    #[test]
    fn xml_text_decodes_entities() {
        assert_eq!(
            xml_text("<a><Arn>x&amp;y</Arn></a>", "Arn").as_deref(),
            Some("x&y")
        );
        assert_eq!(xml_text("<a/>", "Arn"), None);
    }

    #[test]
    fn form_encode_keeps_unreserved() {
        assert_eq!(
            form_encode("arn:aws:iam::1:role/r a"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr%20a"
        );
    }
}
