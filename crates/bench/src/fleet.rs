//! The bench's bots: each one's current identity, output key and roles, kept with the one
//! worker that uses it; creating (or reusing) and joining them before the workloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use machine_id_client::{
    AuthAddrs, CaPin, Certs, Client, ClientError, ClientIdentity, bootstrap_ca_certs,
};
use machine_id_join::token::TokenSecret;
use machine_id_mint::{PrivateKey, Suite, parse_tls_identity};
use machine_id_types::ProvisionToken;

use crate::config::BENCH_ROLE;
use crate::report::SetupReport;
use crate::{BenchConfig, BenchError};

/// How long the join tokens the bench makes live (they are used within seconds).
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A new key of the default suite, as tbot makes for a renewal or an output.
pub(crate) fn new_key() -> Result<PrivateKey, machine_id_mint::MintError> {
    PrivateKey::generate(Suite::Default)
}

/// One bot, as a tbot process holds it.
pub(crate) struct BenchBot {
    /// The bot's name.
    pub(crate) name: String,
    /// Its own list of auth servers (tbot processes share no failover state).
    pub(crate) addrs: AuthAddrs,
    /// The key of its current identity.
    pub(crate) key: PrivateKey,
    /// The certificates of its current identity.
    pub(crate) certs: Certs,
    /// The generation its current identity states.
    pub(crate) generation: u64,
    /// The public half (DER SubjectPublicKeyInfo) of the output's key, which is kept for the
    /// life of the bench as tbot keeps it (the private half would only be written to the
    /// destination, which the bench does not do).
    pub(crate) output_spki: Vec<u8>,
    /// The roles its outputs carry.
    pub(crate) roles: Vec<String>,
    /// The connection the `output` workload keeps.
    pub(crate) kept: Option<Client>,
    /// Why the bot was dropped from the bench (its identity is no longer safe to renew
    /// from, or the server refuses it).
    pub(crate) dropped: Option<String>,
}

impl BenchBot {
    /// The current identity, for a client.
    pub(crate) fn identity(&self) -> Result<ClientIdentity, ClientError> {
        ClientIdentity::from_parts(
            &self.key.to_pem(),
            self.certs.tls_cert.clone(),
            self.certs.tls_ca_certs.clone(),
        )
    }

    /// Takes `key` and `certs` as the current identity; returns the generation they state.
    pub(crate) fn hold(&mut self, key: PrivateKey, certs: Certs) -> Result<u64, String> {
        let id = parse_tls_identity(&certs.tls_cert).map_err(|e| e.to_string())?;
        self.key = key;
        self.certs = certs;
        self.generation = id.generation;
        Ok(self.generation)
    }
}

/// What every join needs: the cluster's CA pins, as `tbot start --ca-pin` takes them.
#[derive(Clone)]
pub(crate) struct JoinTrust {
    pub(crate) pins: Arc<Vec<CaPin>>,
}

/// A first join as tbot makes it: CA-pin bootstrap (the CAs fetched without verifying and
/// checked against the pins), a connection verified by those CAs, `RegisterUsingToken` for a
/// new key. Not retried: the token is single-use.
pub(crate) async fn join(
    addrs: &AuthAddrs,
    trust: &JoinTrust,
    token: &TokenSecret,
) -> Result<(PrivateKey, Certs), JoinFailure> {
    let cas = bootstrap_ca_certs(addrs.clone(), &trust.pins).await?;
    let client = Client::connect_with_cas(addrs.clone(), &cas).await?;
    let key = new_key().map_err(|e| JoinFailure::Local(e.to_string()))?;
    let spki = key.public_key().to_spki_der();
    let certs = client
        .register_using_token(token, &spki, Duration::ZERO)
        .await?;
    Ok((key, certs))
}

/// Whether the server cannot have acted on a call that failed so: the connection could not
/// be made (or was refused during the handshake, as an auth server over its limit of
/// unauthenticated connections per address does), or the server answered `UNAVAILABLE`. A
/// join failing so may be sent again with the same token, as tbot does.
pub(crate) fn not_sent(e: &JoinFailure) -> bool {
    matches!(
        e,
        JoinFailure::Client(ClientError::Unavailable { .. } | ClientError::AllUnavailable { .. })
    )
}

/// How many times the setup sends a join the server did not act on.
const SETUP_JOIN_ATTEMPTS: u32 = 50;

/// Why a join failed.
#[derive(Debug)]
pub(crate) enum JoinFailure {
    /// A call failed.
    Client(ClientError),
    /// Something in this process (key generation).
    Local(String),
}

impl From<ClientError> for JoinFailure {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl std::fmt::Display for JoinFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => e.fmt(f),
            Self::Local(m) => f.write_str(m),
        }
    }
}

/// A new single-use join token for bot `name`, made with the admin identity.
pub(crate) async fn make_token(admin: &Client, name: &str) -> Result<TokenSecret, ClientError> {
    let secret = machine_id_join::token::generate();
    let expires = time::OffsetDateTime::now_utc() + TOKEN_TTL;
    admin
        .upsert_token(
            ProvisionToken::bot_join(secret.expose(), name, expires),
            true,
        )
        .await?;
    Ok(secret)
}

/// Maps the admin's refusal to [`BenchError::NotAdmin`], anything else to a setup error.
fn setup_error(bot: &str, e: ClientError) -> BenchError {
    match e {
        ClientError::PermissionDenied(message) => BenchError::NotAdmin { message },
        cause => BenchError::Setup {
            bot: bot.to_string(),
            cause: Box::new(cause),
        },
    }
}

/// Creates bot `i` (or reuses it from an earlier run) and joins it.
async fn set_up_bot(
    admin: &Client,
    config: &BenchConfig,
    auth_server: &str,
    trust: &JoinTrust,
    i: usize,
) -> Result<(BenchBot, bool), BenchError> {
    let name = config.bot_name(i);
    let (token, roles, reused) = match admin
        .create_bot(&name, &[BENCH_ROLE.to_string()], &[], None, TOKEN_TTL)
        .await
    {
        Ok(created) => (created.token, created.bot.roles, false),
        Err(ClientError::AlreadyExists(_)) => {
            let bot = admin
                .get_bot(&name)
                .await
                .map_err(|e| setup_error(&name, e))?;
            let token = make_token(admin, &name)
                .await
                .map_err(|e| setup_error(&name, e))?;
            (token, bot.roles, true)
        }
        Err(e) => return Err(setup_error(&name, e)),
    };
    let addrs = AuthAddrs::parse(auth_server).map_err(|e| setup_error(&name, e))?;
    let mut attempt = 1;
    let joined = loop {
        match join(&addrs, trust, &token).await {
            Err(e) if not_sent(&e) && attempt < SETUP_JOIN_ATTEMPTS => {
                tracing::debug!(bot = %name, error = %e, "the join was not taken; sending it again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt.min(10)))).await;
            }
            r => break r,
        }
    };
    let (key, certs) = match joined {
        Ok(joined) => joined,
        Err(JoinFailure::Client(
            ClientError::PermissionDenied(message) | ClientError::Unauthenticated(message),
        )) if reused => {
            return Err(BenchError::StaleBot {
                bot: name,
                prefix: config.prefix.clone(),
                message,
            });
        }
        Err(JoinFailure::Client(e)) => return Err(setup_error(&name, e)),
        Err(JoinFailure::Local(m)) => return Err(BenchError::Internal(m)),
    };
    let id = parse_tls_identity(&certs.tls_cert).map_err(|e| BenchError::Setup {
        bot: name.clone(),
        cause: Box::new(ClientError::BadCertificate {
            what: "the joined bot's certificate".into(),
            message: e.to_string(),
        }),
    })?;
    let bot = BenchBot {
        name,
        addrs,
        key,
        certs,
        generation: id.generation,
        output_spki: new_key()?.public_key().to_spki_der(),
        roles,
        kept: None,
        dropped: None,
    };
    Ok((bot, reused))
}

/// Sets up `config.bots` bots, `config.concurrency` at a time, and deals them to the
/// workers: worker `w` gets bots `w`, `w + C`, `w + 2C`, ...
pub(crate) async fn set_up(
    admin: &Client,
    config: &BenchConfig,
    auth_server: &str,
    trust: &JoinTrust,
) -> Result<(Vec<Vec<BenchBot>>, SetupReport), BenchError> {
    let started = Instant::now();
    let c = config.concurrency;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..c {
        let (admin, config, auth_server, trust) = (
            admin.clone(),
            config.clone(),
            auth_server.to_string(),
            trust.clone(),
        );
        tasks.spawn(async move {
            let mut mine = Vec::new();
            let mut reused = 0;
            for i in (w..config.bots).step_by(config.concurrency) {
                let (bot, r) = set_up_bot(&admin, &config, &auth_server, &trust, i).await?;
                reused += usize::from(r);
                mine.push(bot);
            }
            Ok::<_, BenchError>((w, mine, reused))
        });
    }
    let mut shards: Vec<Vec<BenchBot>> = (0..c).map(|_| Vec::new()).collect();
    let mut reused = 0;
    while let Some(done) = tasks.join_next().await {
        let (w, mine, r) = done.map_err(|e| BenchError::Internal(format!("setup task: {e}")))??;
        reused += r;
        if let Some(slot) = shards.get_mut(w) {
            *slot = mine;
        }
    }
    let report = SetupReport {
        created: config.bots - reused,
        reused,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        created = report.created,
        reused = report.reused,
        seconds = report.seconds,
        "the bench's bots are joined"
    );
    Ok((shards, report))
}
