//! `tctl auth rotate`: checks the flags before anything is sent, asks before a forced
//! rotation (`--grace-period=0`), sends one `RotateCA` and says, per CA, what the operator
//! does next. The phase rules are the server's: a refusal is printed as the server words it.

use super::cas::{print_cas, sorted};
use crate::output::{print, rfc3339};
use crate::{Cli, Format, RotateArgs};
use anyhow::{Result, bail};
use machine_id_client::{Client, RotateRequest};
use machine_id_types::{CaType, CertAuthority, RotationPhase, duration};
use std::io::BufRead;
use std::time::Duration;

/// What the phase names are, for messages.
const PHASES: &str = "init, update_clients, update_servers, standby or rollback";

/// A checked `tctl auth rotate`: what to send and how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// What is sent.
    pub request: RotateRequest,
    /// The CA types `--type` selects.
    pub types: Vec<CaType>,
    /// `--yes`.
    pub yes: bool,
    /// `--format`.
    pub format: Format,
}

impl Plan {
    /// A forced rotation: new keys at once, nothing old trusted.
    fn is_forced(&self) -> bool {
        self.request.phase.is_none() && self.request.grace_period == Some(Duration::ZERO)
    }
}

/// Flags that cannot work, found before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FlagError {
    /// What is wrong and what to do.
    pub message: String,
    /// When the phase was the mistake, the CA types whose current phase the message should
    /// add (from the server, if it answers).
    pub show_phases_of: Vec<CaType>,
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl FlagError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            show_phases_of: Vec::new(),
        }
    }
}

/// Checks `tctl auth rotate`'s flags; nothing here needs the server.
pub(super) fn check(args: &RotateArgs) -> Result<Plan, FlagError> {
    let Some(kind) = args.kind.as_deref() else {
        return Err(FlagError::new(
            "--type is required: the CAs to rotate, one of user, host, tls or all (e.g. tctl auth rotate --type=all --manual --phase=init)",
        ));
    };
    let types =
        CaType::parse_selection(kind).map_err(|e| FlagError::new(format!("--type: {e}")))?;
    let grace_period = args
        .grace_period
        .as_deref()
        .map(|g| {
            duration::parse(g).map_err(|e| {
                FlagError::new(format!(
                    "--grace-period: {e}; use a duration such as 48h, 90m or 0 (0 replaces the keys at once)"
                ))
            })
        })
        .transpose()?;
    let phase = match args.phase.as_deref() {
        None => None,
        Some(p) => Some(p.parse::<RotationPhase>().map_err(|e| {
            let mut message = format!("--phase: {e}");
            if let Ok(meant) = p.trim().replace('-', "_").parse::<RotationPhase>() {
                message.push_str(&format!(" (did you mean --phase={meant}?)"));
            }
            FlagError {
                message,
                show_phases_of: types.clone(),
            }
        })?),
    };
    match (phase, args.manual, grace_period) {
        (Some(_), _, Some(_)) => Err(FlagError::new(
            "--phase and --grace-period do not go together: --manual --phase=PHASE moves a manual rotation, --grace-period=DUR (without --phase) starts an automatic one",
        )),
        (Some(p), false, None) => Err(FlagError::new(format!(
            "--phase={p} needs --manual: the operator moves a manual rotation phase by phase (tctl auth rotate --type={kind} --manual --phase={p}); for an automatic rotation give --grace-period=DUR without --phase"
        ))),
        (None, true, _) => Err(FlagError::new(format!(
            "--manual needs --phase, one of {PHASES} (a manual rotation starts with --phase=init)"
        ))),
        (None, false, None) => Err(FlagError::new(format!(
            "say what to do: --manual --phase=PHASE ({PHASES}) moves a manual rotation, or --grace-period=DUR (e.g. 48h) starts an automatic one"
        ))),
        (phase, manual, grace_period) => Ok(Plan {
            request: RotateRequest {
                ca_type: kind.trim().to_string(),
                phase,
                manual,
                grace_period,
            },
            types,
            yes: args.yes,
            format: args.format,
        }),
    }
}

/// Turns a [`FlagError`] into the error printed; when the phase was the mistake it adds the
/// phase each CA is in and the phases allowed next, if the auth server answers (nothing is
/// sent to change anything).
pub(super) async fn explain(e: FlagError, cli: &Cli) -> anyhow::Error {
    if e.show_phases_of.is_empty() {
        return anyhow::anyhow!(e.message);
    }
    let current = match super::connect(cli).await {
        Ok(client) => client.get_cert_authorities().await.ok(),
        Err(_) => None,
    };
    match current {
        Some(cas) => {
            let selected = selected(cas, &e.show_phases_of);
            anyhow::anyhow!("{}; now {}", e.message, phases_text(&selected))
        }
        None => anyhow::anyhow!(e.message),
    }
}

/// `the user CA is in phase init (next: update_clients or rollback), ...`.
pub(super) fn phases_text(cas: &[CertAuthority]) -> String {
    cas.iter()
        .map(|ca| {
            let phase = ca.spec.rotation.phase;
            let next: Vec<&str> = phase.allowed_next().iter().map(|p| p.as_str()).collect();
            format!(
                "the {} CA is in phase {phase} (next: {})",
                ca.spec.ca_type,
                next.join(" or ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CAs of `types`, in listing order.
fn selected(cas: Vec<CertAuthority>, types: &[CaType]) -> Vec<CertAuthority> {
    sorted(cas)
        .into_iter()
        .filter(|ca| types.contains(&ca.spec.ca_type))
        .collect()
}

/// `user`, `user and host`, `user, host and tls`.
fn names(types: &[CaType]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Asks on stderr whether to replace the keys of `types` at once; anything but `y` or
/// `yes` (including no terminal) is a no.
fn confirm(types: &[CaType]) -> Result<()> {
    let cas = if types.len() == 1 { "CA" } else { "CAs" };
    eprint!(
        "--grace-period=0 replaces the keys of the {} {cas} at once: every certificate they issued stops working now{}. Continue? [y/N] ",
        names(types),
        if types.contains(&CaType::Tls) {
            ", and every bot must join again with a new token"
        } else {
            ""
        }
    );
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer).unwrap_or(0);
    if !answer.ends_with('\n') {
        // No line was typed (no terminal, or end of input): end the prompt's line.
        eprintln!();
    }
    if read > 0 && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        return Ok(());
    }
    bail!(
        "not confirmed, nothing was changed; pass --yes to rotate with --grace-period=0 without being asked"
    )
}

/// What to do after the keys of `ca` were replaced at once.
fn forced_hint(ca: CaType) -> &'static str {
    match ca {
        CaType::User => {
            "install the new user CA on every OpenSSH node now (tctl auth export --type=user > the TrustedUserCAKeys file); bots get SSH certificates from it at their next renewal"
        }
        CaType::Host => {
            "re-sign every OpenSSH node's host certificate now (tctl auth sign --host=NAME); bots trust the new host CA from their next renewal"
        }
        CaType::Tls => {
            "every bot must join again with a new token (tctl bots add NAME, or tctl tokens add --type=bot --bot=NAME); new joins take the new CA pin (tctl status)"
        }
    }
}

/// The text `tctl auth rotate` prints after the server changed `cas`.
pub(super) fn report(plan: &Plan, cas: &[CertAuthority]) -> String {
    let cas = selected(cas.to_vec(), &plan.types);
    let mut out = String::new();
    if plan.is_forced() {
        out.push_str(&format!(
            "Replaced the keys of the {} CA{} at once (grace period 0); the old keys are no longer trusted. To check status use 'tctl status'\n",
            names(&plan.types),
            if plan.types.len() == 1 { "" } else { "s" }
        ));
        for ca in &cas {
            let t = ca.spec.ca_type;
            out.push_str(&format!("{t} CA: {}\n", forced_hint(t)));
        }
        return out;
    }
    match plan.request.phase {
        Some(p) => out.push_str(&format!(
            "Updated rotation phase to \"{p}\". To check status use 'tctl status'\n"
        )),
        None => {
            let grace = cas
                .iter()
                .find_map(|ca| ca.spec.rotation.grace_period)
                .or(plan.request.grace_period);
            out.push_str(&format!(
                "Started an automatic rotation of the {} CA{}{}. To check status use 'tctl status'\n",
                names(&plan.types),
                if plan.types.len() == 1 { "" } else { "s" },
                grace
                    .map(|g| format!(" (grace period {})", duration::format(g)))
                    .unwrap_or_default()
            ));
            if let Some(s) = cas.iter().find_map(|ca| ca.spec.rotation.schedule) {
                out.push_str(&format!(
                    "The auth servers move to update_clients at {}, update_servers at {} and standby at {}.\n",
                    rfc3339(s.update_clients),
                    rfc3339(s.update_servers),
                    rfc3339(s.standby)
                ));
            }
        }
    }
    for ca in &cas {
        let (t, phase) = (ca.spec.ca_type, ca.spec.rotation.phase);
        out.push_str(&format!("{t} CA ({phase}): {}\n", phase.next_step_hint(t)));
    }
    out
}

/// Runs a checked `tctl auth rotate`.
pub(super) async fn rotate(client: &Client, plan: Plan) -> Result<()> {
    if plan.is_forced() && !plan.yes {
        confirm(&plan.types)?;
    }
    let cas = client.rotate_ca(&plan.request).await?;
    match plan.format {
        Format::Text => print(&report(&plan, &cas)),
        other => print_cas(&sorted(cas), other, false),
    }
}

#[cfg(test)]
mod tests;
