//! Fake HTTP servers on `127.0.0.1:0` and helpers shared by the tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use machine_id_join::iam::{AwsCredentials, StsTarget, sign_identity_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request the fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake server does with a request.
pub enum Reply {
    /// Answer with this status, content type and body (with Content-Length).
    Respond {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Stream an endless body without Content-Length (until the client hangs up).
    Endless,
    /// Declare a huge Content-Length and send a little.
    DeclareHuge,
    /// Read the request and never answer.
    Hang,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply::Respond {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn status(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply::Respond {
            status,
            content_type,
            body: body.into(),
        }
    }
}

/// A running fake server; dropped with the test's runtime.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves every connection with `handler`, one request per connection.
pub async fn serve<F>(handler: F) -> FakeServer
where
    F: Fn(&Recorded) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let log = requests.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let _ = handle(conn, &*handler, &log).await;
            });
        }
    });
    FakeServer { addr, requests }
}

async fn handle<F>(
    mut conn: TcpStream,
    handler: &F,
    log: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()>
where
    F: Fn(&Recorded) -> Reply,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Recorded {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    match handler(&req) {
        Reply::Respond {
            status,
            content_type,
            body,
        } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(&body).await?;
            conn.shutdown().await?;
        }
        Reply::Endless => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\nconnection: close\r\n\r\n",
            )
            .await?;
            let block = vec![b'x'; 16 * 1024];
            // At most 64 MiB, in case the client never stops reading.
            for _ in 0..4096 {
                conn.write_all(&block).await?;
            }
        }
        Reply::DeclareHuge => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: 1000000000\r\n\r\n<x>",
            )
            .await?;
            std::future::pending::<()>().await;
        }
        Reply::Hang => std::future::pending::<()>().await,
    }
    Ok(())
}

/// A port nothing listens on: bound, then released.
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

pub fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("SESSIONTOKEN".into()),
    }
}

pub fn target(url: &str) -> StsTarget {
    StsTarget {
        url: url.into(),
        region: "us-east-1".into(),
    }
}

/// A signed request for `url` carrying `challenge`, as text for easy surgery.
pub fn signed(url: &str, challenge: &str) -> String {
    let raw = sign_identity_request(&creds(), &target(url), challenge, SystemTime::now()).unwrap();
    String::from_utf8(raw).unwrap()
}

/// A GetCallerIdentity answer in XML, as moto and STS send it.
pub const XML_IDENTITY: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/bot-role/i-0abc</Arn>
    <UserId>AROAEXAMPLE:i-0abc</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
"#;

/// The same answer in JSON.
pub const JSON_IDENTITY: &str = r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"123456789012","Arn":"arn:aws:sts::123456789012:assumed-role/bot-role/i-0abc","UserId":"AROAEXAMPLE:i-0abc"},"ResponseMetadata":{"RequestId":"x"}}}"#;
