//! The administrative calls that are not resource CRUD: bots (create, get, list, delete,
//! lock), CA export, host certificate signing and the audit log.

use super::{Client, by_name, convert_all, secs};
use crate::error::Result;
use machine_id_join::token::TokenSecret;
use machine_id_proto::v1;
use machine_id_proto::{timestamp_from, timestamp_to};
use machine_id_types::{AuditEvent, Bot, JoinMethod, Lock};
use std::time::Duration;
use time::OffsetDateTime;

/// A bot just created, with the token it joins with.
#[derive(Debug, Clone)]
pub struct CreatedBot {
    /// The bot.
    pub bot: Bot,
    /// The join token: the secret for the `token` method, a plain name for `iam`.
    pub token: TokenSecret,
    /// When the token expires, if ever.
    pub token_expires: Option<OffsetDateTime>,
    /// How the bot joins with it.
    pub join_method: JoinMethod,
}

/// Which audit events [`Client::search_events_page`] asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSearch {
    /// Only events of this type (`bot.join`, ...); `None` for every type.
    pub event_type: Option<String>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// The most events per page; zero for the server's default (1000). The server caps it
    /// at 10,000.
    pub limit: u32,
    /// `None` for the newest page; else the [`EventPage::next_page`] of the previous page
    /// of the same search.
    pub page: Option<String>,
}

/// One page of audit events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<AuditEvent>,
    /// When older events match than this page holds: an opaque cursor to put in
    /// [`EventSearch::page`] for them; `None` when this page holds the oldest match.
    pub next_page: Option<String>,
}

/// A CA as `tctl auth export` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportedCa {
    /// SSH CAs (`user`, `host`): OpenSSH public key lines.
    pub ssh_public_keys: Vec<String>,
    /// The TLS CA (`tls`): certificates, DER.
    pub tls_certs: Vec<Vec<u8>>,
}

/// A signed SSH host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCert {
    /// The OpenSSH host certificate line.
    pub ssh_cert: String,
    /// The host CA's public key line, for known_hosts.
    pub host_ca_key: String,
}

impl Client {
    // ---- bots ----

    /// Creates bot `name` (user and role `bot-<name>`) allowed to impersonate `roles`, with the
    /// `logins` trait. With `token_name`, the bot joins with that existing token (e.g. an `iam`
    /// token); otherwise the server makes a fresh single-use token living `token_ttl` (zero:
    /// one hour).
    pub async fn create_bot(
        &self,
        name: &str,
        roles: &[String],
        logins: &[String],
        token_name: Option<&str>,
        token_ttl: Duration,
    ) -> Result<CreatedBot> {
        let request = v1::CreateBotRequest {
            name: name.to_string(),
            roles: roles.to_vec(),
            logins: logins.to_vec(),
            token_name: token_name.unwrap_or_default().to_string(),
            token_ttl_seconds: secs(token_ttl),
        };
        let r = self
            .write("CreateBot", |mut c| {
                let request = request.clone();
                async move { c.auth.create_bot(request).await }
            })
            .await;
        let r = r?;
        let bot = r.bot.ok_or_else(|| machine_id_proto::ConvertError {
            what: "bot",
            message: "missing from the reply".into(),
        })?;
        let join_method = if r.join_method.is_empty() {
            JoinMethod::Token
        } else {
            r.join_method
                .parse()
                .map_err(|message| machine_id_proto::ConvertError {
                    what: "join method",
                    message,
                })?
        };
        Ok(CreatedBot {
            bot: bot.into(),
            token: TokenSecret::new(r.token_name),
            token_expires: r.token_expires.as_ref().map(timestamp_to).transpose()?,
            join_method,
        })
    }

    /// One bot.
    pub async fn get_bot(&self, name: &str) -> Result<Bot> {
        let r = self
            .read("GetBot", |mut c| async move {
                c.auth.get_bot(by_name(name)).await
            })
            .await;
        Ok(r?.into())
    }

    /// Every bot.
    pub async fn list_bots(&self) -> Result<Vec<Bot>> {
        let r = self
            .read("ListBots", |mut c| async move {
                c.auth.list_bots(v1::ListRequest {}).await
            })
            .await;
        Ok(r?.bots.into_iter().map(Bot::from).collect())
    }

    /// Deletes a bot: its user, role and tokens.
    pub async fn delete_bot(&self, name: &str) -> Result<()> {
        let r = self
            .write("DeleteBot", |mut c| async move {
                c.auth.delete_bot(by_name(name)).await
            })
            .await;
        r.map(drop)
    }

    /// Locks a bot's user, for `ttl` or (`None`) until the lock is removed.
    pub async fn lock_bot(&self, name: &str, message: &str, ttl: Option<Duration>) -> Result<Lock> {
        let request = v1::LockBotRequest {
            name: name.to_string(),
            message: message.to_string(),
            ttl_seconds: ttl.map(secs).unwrap_or(0),
        };
        let r = self
            .write("LockBot", |mut c| {
                let request = request.clone();
                async move { c.auth.lock_bot(request).await }
            })
            .await;
        Ok(r?.try_into()?)
    }

    // ---- CAs, host certs, events ----

    /// Exports a CA: `user`, `host` (OpenSSH lines) or `tls` (DER certificates); see
    /// `machine_id_types::ca_kind`.
    pub async fn export_ca(&self, kind: &str) -> Result<ExportedCa> {
        let request = v1::ExportCaRequest {
            ca_type: kind.to_string(),
        };
        let r = self
            .read("ExportCa", |mut c| {
                let request = request.clone();
                async move { c.auth.export_ca(request).await }
            })
            .await;
        let r = r?;
        Ok(ExportedCa {
            ssh_public_keys: r.ssh_public_keys,
            tls_certs: r.tls_certs,
        })
    }

    /// Signs an SSH host certificate for `public_key` (an OpenSSH line) with principals
    /// `hostnames` (the server adds `<name>.<cluster>`), valid for `ttl`.
    pub async fn sign_host_cert(
        &self,
        public_key: &str,
        hostnames: &[String],
        ttl: Duration,
    ) -> Result<HostCert> {
        let request = v1::SignHostCertRequest {
            public_key: public_key.to_string(),
            hostnames: hostnames.to_vec(),
            ttl_seconds: secs(ttl),
        };
        let r = self
            .read("SignHostCert", |mut c| {
                let request = request.clone();
                async move { c.auth.sign_host_cert(request).await }
            })
            .await;
        let r = r?;
        Ok(HostCert {
            ssh_cert: r.ssh_cert,
            host_ca_key: r.host_ca_key,
        })
    }

    /// Audit events, oldest first: of `event_type` (all when `None`), at most `limit` (zero:
    /// the server's default), since `since` when given: the newest that match, one page of
    /// [`Client::search_events_page`].
    pub async fn search_events(
        &self,
        event_type: Option<&str>,
        limit: u32,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<AuditEvent>> {
        let search = EventSearch {
            event_type: event_type.map(str::to_string),
            since,
            limit,
            ..EventSearch::default()
        };
        Ok(self.search_events_page(&search).await?.events)
    }

    /// One page of audit events: the newest `search.limit` that match (and are older than
    /// `search.page`'s when given), oldest first, with the cursor of the next, older page
    /// when more match. Reading a whole range:
    ///
    /// ```no_run
    /// # async fn f(client: &machine_id_client::Client) -> machine_id_client::Result<()> {
    /// use machine_id_client::EventSearch;
    /// let mut search = EventSearch { event_type: Some("bot.join".into()), limit: 500, ..EventSearch::default() };
    /// loop {
    ///     let page = client.search_events_page(&search).await?;
    ///     for event in &page.events {
    ///         println!("{} {}", event.time, event.message);
    ///     }
    ///     match page.next_page {
    ///         Some(next) => search.page = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The server reads about `limit` events from an index whatever the log's size; it
    /// caps `limit` at 10,000.
    pub async fn search_events_page(&self, search: &EventSearch) -> Result<EventPage> {
        let request = v1::SearchEventsRequest {
            event_type: search.event_type.clone().unwrap_or_default(),
            limit: search.limit,
            since: search.since.map(timestamp_from),
            until: search.until.map(timestamp_from),
            page: search.page.clone().unwrap_or_default(),
        };
        let r = self
            .read("SearchEvents", |mut c| {
                let request = request.clone();
                async move { c.auth.search_events(request).await }
            })
            .await;
        let r = r?;
        Ok(EventPage {
            events: convert_all(r.events)?,
            next_page: (!r.next_page.is_empty()).then_some(r.next_page),
        })
    }
}
