//! Forwarding the verified request to STS and reading its answer.

use std::time::Duration;

use crate::iam::http::{self, HttpError, sanitize};
use crate::iam::{IamError, VerifiedRequest};

/// The largest STS response body the server reads.
pub const MAX_STS_BODY_BYTES: usize = 64 * 1024;

/// Who STS says signed the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The 12-digit account id.
    pub account: String,
    /// The caller's ARN (`arn:aws:sts::111111111111:assumed-role/role/session`).
    pub arn: String,
    /// The unique id of the caller.
    pub user_id: String,
}

/// Sends verified requests to STS.
#[derive(Debug, Clone)]
pub struct StsClient {
    timeout: Duration,
}

impl StsClient {
    /// A client that gives STS `timeout` for the whole exchange.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Forwards `req` and parses the caller identity STS answers.
    ///
    /// The request goes to the allow-listed endpoint with its headers and body exactly as
    /// signed. The whole exchange gets the client's timeout ([`IamError::StsTimeout`]); a
    /// failed connection is [`IamError::StsUnreachable`]; at most [`MAX_STS_BODY_BYTES`] are
    /// read ([`IamError::StsBodyTooLarge`]); a non-2xx answer is [`IamError::StsRefused`]
    /// with the AWS error code and message when STS gives them.
    pub async fn get_caller_identity(
        &self,
        req: &VerifiedRequest,
    ) -> Result<CallerIdentity, IamError> {
        let endpoint = req.endpoint.to_string();
        let url = req
            .endpoint
            .url()
            .map_err(|reason| IamError::StsUnreachable {
                endpoint: endpoint.clone(),
                reason: format!("the endpoint is not a usable URL: {reason}"),
            })?;
        let started = std::time::Instant::now();
        let answer = http::send(
            http::Request {
                method: "POST",
                url: &url,
                headers: &req.headers,
                body: req.body.clone(),
            },
            http::Limits {
                connect: self.timeout,
                total: self.timeout,
                max_body: MAX_STS_BODY_BYTES,
            },
        )
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let resp = answer.map_err(|e| {
            tracing::debug!(%endpoint, elapsed_ms, error = ?e, "STS GetCallerIdentity failed");
            match e {
                HttpError::Timeout => IamError::StsTimeout {
                    endpoint: endpoint.clone(),
                    timeout: self.timeout,
                },
                HttpError::Connect(reason) => IamError::StsUnreachable {
                    endpoint: endpoint.clone(),
                    reason,
                },
                HttpError::TooLarge => IamError::StsBodyTooLarge {
                    endpoint: endpoint.clone(),
                    limit: MAX_STS_BODY_BYTES,
                },
                HttpError::Protocol(reason) => IamError::StsProtocol {
                    endpoint: endpoint.clone(),
                    reason,
                },
            }
        })?;
        tracing::debug!(%endpoint, status = resp.status, elapsed_ms, "STS answered GetCallerIdentity");
        if !(200..300).contains(&resp.status) {
            let (code, message) = parse_aws_error(&resp.body);
            return Err(IamError::StsRefused {
                endpoint,
                status: resp.status,
                code,
                message,
            });
        }
        parse_caller_identity(&resp.body)
    }
}

/// The largest AWS error code or message kept, in characters.
const MAX_ERROR_TEXT: usize = 200;
/// The deepest XML nesting the parsers follow.
const MAX_XML_DEPTH: usize = 32;

/// The AWS error code and message of an error answer: XML
/// `<ErrorResponse><Error><Code>..</Code><Message>..</Message>` or JSON
/// `{"Error":{"Code":..,"Message":..}}`, sanitized and truncated; `None` when absent.
pub(crate) fn parse_aws_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start();
    let (code, message) = if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let err = &v["Error"];
        let field = |k: &str| err[k].as_str().map(str::to_string);
        (field("Code"), field("Message"))
    } else if text.starts_with('<') {
        let mut f = xml_fields(text, &["ErrorResponse", "Error"], &["Code", "Message"])
            .unwrap_or_default()
            .into_iter();
        (f.next().flatten(), f.next().flatten())
    } else {
        (None, None)
    };
    let clean = |s: Option<String>| {
        s.map(|s| sanitize(s.trim(), MAX_ERROR_TEXT))
            .filter(|s| !s.is_empty())
    };
    (clean(code), clean(message))
}

/// The text of elements `names` directly under the element path `path` (local names, the
/// root first), or `Err` with a reason when the XML is not well formed. The first occurrence
/// of each wins.
fn xml_fields(text: &str, path: &[&str], names: &[&str]) -> Result<Vec<Option<String>>, String> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut found: Vec<Option<String>> = vec![None; names.len()];
    // The field being read (index into names) and its text so far.
    let mut current: Option<(usize, String)> = None;
    let field_at = |stack: &[Vec<u8>]| -> Option<usize> {
        let (last, parents) = stack.split_last()?;
        let under = parents.len() == path.len()
            && parents
                .iter()
                .zip(path)
                .all(|(a, b)| a.as_slice() == b.as_bytes());
        if !under {
            return None;
        }
        names.iter().position(|n| n.as_bytes() == last.as_slice())
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err("XML nested too deep".into());
                }
                stack.push(e.local_name().as_ref().to_vec());
                current = field_at(&stack).map(|i| (i, String::new()));
            }
            Event::End(_) => {
                if let Some((i, value)) = current.take()
                    && found[i].is_none()
                {
                    found[i] = Some(value);
                }
                stack.pop();
            }
            Event::Empty(e) => {
                stack.push(e.local_name().as_ref().to_vec());
                if let Some(i) = field_at(&stack)
                    && found[i].is_none()
                {
                    found[i] = Some(String::new());
                }
                stack.pop();
            }
            Event::Text(t) => {
                if let Some((_, value)) = current.as_mut() {
                    let t = t.decode().map_err(|e| format!("undecodable text: {e}"))?;
                    value.push_str(&t);
                }
            }
            Event::CData(t) => {
                if let Some((_, value)) = current.as_mut() {
                    let t = t.decode().map_err(|e| format!("undecodable CDATA: {e}"))?;
                    value.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, value)) = current.as_mut() {
                    let c = if let Ok(Some(c)) = r.resolve_char_ref() {
                        c.to_string()
                    } else {
                        let name = r.decode().map_err(|e| format!("undecodable entity: {e}"))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{};", sanitize(&name, 32)))?
                            .to_string()
                    };
                    value.push_str(&c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(found)
}

/// The longest ARN or user id accepted (IAM's own limit is 2048).
const MAX_FIELD_CHARS: usize = 2048;

/// Parses a `GetCallerIdentityResponse`, JSON or XML.
///
/// JSON: `{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account","Arn","UserId"}}}`;
/// XML: `<GetCallerIdentityResponse><GetCallerIdentityResult><Arn/><UserId/><Account/>...`
/// (namespace ignored). All three fields are required; the account must be 12 digits and the
/// ARN must start with `arn:`.
pub fn parse_caller_identity(body: &[u8]) -> Result<CallerIdentity, IamError> {
    let bad = |reason: String| IamError::MalformedStsResponse { reason };
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
    let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    const FIELDS: [&str; 3] = ["Account", "Arn", "UserId"];
    let fields: Vec<Option<String>> = if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let result = &v["GetCallerIdentityResponse"]["GetCallerIdentityResult"];
        if !result.is_object() {
            return Err(bad(
                "no GetCallerIdentityResponse.GetCallerIdentityResult object".into(),
            ));
        }
        FIELDS
            .iter()
            .map(|k| result[*k].as_str().map(str::to_string))
            .collect()
    } else if text.starts_with('<') {
        xml_fields(
            text,
            &["GetCallerIdentityResponse", "GetCallerIdentityResult"],
            &FIELDS,
        )
        .map_err(bad)?
    } else {
        return Err(bad("neither JSON nor XML".into()));
    };
    let mut fields = fields.into_iter().zip(FIELDS).map(|(v, name)| {
        let v = v
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(format!("no {name}")))?;
        if v.chars().count() > MAX_FIELD_CHARS || v.chars().any(char::is_control) {
            return Err(bad(format!("{name} is too long or has control characters")));
        }
        Ok(v)
    });
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| Err(bad("missing field".into())))
    };
    let (account, arn, user_id) = (next()?, next()?, next()?);
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "Account {:?} is not 12 digits",
            sanitize(&account, 32)
        )));
    }
    if !arn.starts_with("arn:") {
        return Err(bad(format!(
            "Arn {:?} does not start with arn:",
            sanitize(&arn, 64)
        )));
    }
    Ok(CallerIdentity {
        account,
        arn,
        user_id,
    })
}
