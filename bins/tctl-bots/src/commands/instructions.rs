//! The join instructions `tctl bots add` and `tctl tokens add` print: the token, how long it
//! lives, and the `tbot start` command line that joins with it.

use crate::output::{minutes_until, rfc3339};
use machine_id_client::CaPin;
use machine_id_types::JoinMethod;
use serde_json::json;
use time::OffsetDateTime;

/// The join instructions `bots add` and `tokens add` print.
pub(super) struct JoinInstructions<'a> {
    pub(super) token: &'a str,
    pub(super) expires: Option<OffsetDateTime>,
    pub(super) join_method: JoinMethod,
    pub(super) pins: &'a [CaPin],
    pub(super) addr: &'a str,
}

impl JoinInstructions<'_> {
    fn lifetime(&self) -> String {
        match self.expires {
            Some(t) => format!(
                "This token will expire in {} minutes.",
                minutes_until(t, OffsetDateTime::now_utc())
            ),
            None => "This token does not expire.".to_string(),
        }
    }

    fn tbot_start(&self) -> String {
        let mut lines = vec![
            "tbot start".to_string(),
            "   --destination-dir=./tbot-user".to_string(),
            format!("   --token={}", self.token),
        ];
        if self.join_method != JoinMethod::Token {
            lines.push(format!("   --join-method={}", self.join_method));
        }
        for p in self.pins {
            lines.push(format!("   --ca-pin={p}"));
        }
        lines.push(format!("   --auth-server={}", self.addr));
        lines.join(" \\\n")
    }

    /// The instructions for people.
    pub(super) fn text(&self) -> String {
        let lifetime = self.lifetime();
        format!(
            "The bot token: {token}\n\
             {lifetime}\n\
             \n\
             Optionally, if running the bot under an isolated user account, first initialize\n\
             the data directory by running the following command as root:\n\
             \n\
             > tbot init \\\n   --destination-dir=./tbot-user \\\n   --bot-user=tbot \\\n   --reader-user=alice\n\
             \n\
             ...and then run the bot as the bot user:\n\
             \n\
             > {start}\n\
             \n\
             Please note:\n\
             \n\
             \x20 - The ./tbot-user destination directory can be changed as desired.\n\
             \x20 - /var/lib/teleport/bot must be accessible to the bot user, or --data-dir\n\
             \x20   must be set to a directory accessible to the bot user.\n\
             \x20 - {lifetime}\n\
             \x20 - {addr} must be reachable from the machine the bot runs on.\n",
            token = self.token,
            start = self.tbot_start(),
            addr = self.addr,
        )
    }

    /// The instructions for scripts.
    pub(super) fn json(&self) -> serde_json::Value {
        json!({
            "token": self.token,
            "token_expires": self.expires.map(rfc3339),
            "token_ttl_minutes": self.expires.map(|t| minutes_until(t, OffsetDateTime::now_utc())),
            "join_method": self.join_method.as_str(),
            "ca_pins": self.pins.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "auth_server": self.addr,
            "tbot_start": self.tbot_start(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn tbot_start_command_is_exact() {
        let pin = CaPin::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let i = JoinInstructions {
            token: "t0k",
            expires: None,
            join_method: JoinMethod::Iam,
            pins: std::slice::from_ref(&pin),
            addr: "127.0.0.1:3025",
        };
        assert_eq!(
            i.tbot_start(),
            format!(
                "tbot start \\\n   --destination-dir=./tbot-user \\\n   --token=t0k \\\n   --join-method=iam \\\n   --ca-pin={pin} \\\n   --auth-server=127.0.0.1:3025"
            )
        );
    }
}
