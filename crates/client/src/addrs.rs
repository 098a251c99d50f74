//! [`AuthAddrs`]: the list of auth server addresses a client may dial, the one that worked
//! last, and how often calls had to move on to another.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{ClientError, Result};

/// The auth servers of one cluster, in the order to try them: `host:port` entries, given as
/// one comma-separated string (`"a:3025,b:3025"`), a list, or a single address as before.
///
/// Entries are trimmed and deduplicated with their order kept; an empty entry (`"a:3025,,b"`,
/// a trailing comma, an empty string) is refused by [`AuthAddrs::parse`]. The conversions
/// from strings ([`From<&str>`](#impl-From<%26str>-for-AuthAddrs)) cannot fail, so they keep
/// the problem and every connection attempt reports it instead.
///
/// Clones share state: the index of the address that answered last (the next connection
/// starts there, so a dead first server does not cost a timeout per call) and the counters
/// of [`AuthAddrs::failovers`] and [`AuthAddrs::retries`]. Keep one value per cluster and
/// pass it to every connection.
///
/// ```
/// use machine_id_client::AuthAddrs;
/// let addrs = AuthAddrs::parse("a.example.com:3025, b.example.com:3025,a.example.com:3025")?;
/// assert_eq!(addrs.to_string(), "a.example.com:3025,b.example.com:3025");
/// assert!(AuthAddrs::parse("a:3025,,b:3025").is_err());
/// # Ok::<(), machine_id_client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct AuthAddrs {
    addrs: Arc<[String]>,
    /// Why the text these came from is not a usable list (set only by the infallible
    /// conversions; every connection attempt then fails with it).
    problem: Option<Arc<str>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    preferred: AtomicUsize,
    failovers: AtomicU64,
    retries: AtomicU64,
}

impl AuthAddrs {
    /// Parses a comma-separated list of `host:port` addresses.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadAddress`] when the text is empty or an entry is empty.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_list(text.split(','))
    }

    /// The addresses of `entries`, each of which may itself be a comma-separated list (so
    /// repeated `--auth-server` flags and comma lists mix).
    ///
    /// # Errors
    ///
    /// [`ClientError::BadAddress`] when there is no entry or one is empty.
    pub fn from_list<I, S>(entries: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let raw: Vec<String> = entries
            .into_iter()
            .flat_map(|e| {
                e.as_ref()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let shown = raw.join(",");
        if raw.iter().all(String::is_empty) {
            return Err(ClientError::BadAddress {
                addr: shown,
                message: "no address given".into(),
            });
        }
        if let Some(i) = raw.iter().position(String::is_empty) {
            return Err(ClientError::BadAddress {
                addr: shown,
                message: format!(
                    "entry {} of the comma-separated list is empty; remove the extra comma",
                    i + 1
                ),
            });
        }
        let mut addrs: Vec<String> = Vec::with_capacity(raw.len());
        for a in raw {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        Ok(Self {
            addrs: addrs.into(),
            problem: None,
            shared: Arc::default(),
        })
    }

    /// The addresses, in the order given.
    pub fn as_slice(&self) -> &[String] {
        &self.addrs
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there is no address (only for a value whose text was refused).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The address that answered last (the first one until one did).
    pub fn preferred(&self) -> &str {
        self.addrs
            .get(self.preferred_index())
            .map_or("", String::as_str)
    }

    /// How many times a connection or call moved on to another address because the one it
    /// tried could not be reached (or answered `UNAVAILABLE`), over every clone.
    pub fn failovers(&self) -> u64 {
        self.shared.failovers.load(Ordering::Relaxed)
    }

    /// How many times a call was sent again after a failure that allowed it, over every
    /// clone (a failover that re-sends a call counts in both).
    pub fn retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    /// Refuses a list whose text was not usable (see [`AuthAddrs::parse`]).
    pub(crate) fn check(&self) -> Result<()> {
        match &self.problem {
            None => Ok(()),
            Some(p) => Err(ClientError::BadAddress {
                addr: self.addrs.join(","),
                message: p.to_string(),
            }),
        }
    }

    pub(crate) fn preferred_index(&self) -> usize {
        let n = self.addrs.len().max(1);
        self.shared.preferred.load(Ordering::Relaxed) % n
    }

    pub(crate) fn set_preferred(&self, index: usize) {
        self.shared.preferred.store(index, Ordering::Relaxed);
    }

    pub(crate) fn count_failover(&self) {
        self.shared.failovers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_retry(&self) {
        self.shared.retries.fetch_add(1, Ordering::Relaxed);
    }
}

impl PartialEq for AuthAddrs {
    fn eq(&self, other: &Self) -> bool {
        self.addrs == other.addrs && self.problem == other.problem
    }
}

impl Eq for AuthAddrs {}

impl fmt::Display for AuthAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addrs.join(","))
    }
}

impl fmt::Debug for AuthAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthAddrs")
            .field("addrs", &self.addrs)
            .field("preferred", &self.preferred_index())
            .finish_non_exhaustive()
    }
}

impl FromStr for AuthAddrs {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl From<&str> for AuthAddrs {
    /// [`AuthAddrs::parse`]; text it refuses gives a value that fails every connection with
    /// the same message.
    fn from(s: &str) -> Self {
        Self::parse(s).unwrap_or_else(|e| {
            let message = match e {
                ClientError::BadAddress { message, .. } => message,
                other => other.to_string(),
            };
            Self {
                addrs: vec![s.to_string()].into(),
                problem: Some(message.into()),
                shared: Arc::default(),
            }
        })
    }
}

impl From<&String> for AuthAddrs {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<String> for AuthAddrs {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<&AuthAddrs> for AuthAddrs {
    /// A clone, sharing the preferred address and the counters.
    fn from(a: &AuthAddrs) -> Self {
        a.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn lists_parse_dedup_and_keep_order() {
        let a = AuthAddrs::parse(" b:1 ,a:1,b:1").unwrap();
        assert_eq!(a.as_slice(), ["b:1", "a:1"]);
        assert_eq!(a.to_string(), "b:1,a:1");
        let a = AuthAddrs::from_list(["a:1,b:1", "c:1", "a:1"]).unwrap();
        assert_eq!(a.as_slice(), ["a:1", "b:1", "c:1"]);
        let one: AuthAddrs = "h:3025".into();
        assert_eq!(one.as_slice(), ["h:3025"]);
        assert!(one.check().is_ok());
    }

    #[test]
    fn empty_entries_are_refused_with_what_to_do() {
        let e = AuthAddrs::parse("a:1,,b:1").unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
        assert!(e.contains("remove the extra comma"), "{e}");
        let e = AuthAddrs::parse("a:1,").unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
        let e = AuthAddrs::parse(" ").unwrap_err().to_string();
        assert!(e.contains("no address given"), "{e}");
        let e = AuthAddrs::from_list(Vec::<String>::new()).unwrap_err();
        assert!(e.to_string().contains("no address given"), "{e}");
        // The infallible conversion keeps the problem for the connection to report.
        let bad: AuthAddrs = "a:1,,b:1".into();
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
    }

    #[test]
    fn clones_share_the_preferred_address_and_counters() {
        let a = AuthAddrs::parse("a:1,b:1").unwrap();
        let b = AuthAddrs::from(&a);
        b.set_preferred(1);
        b.count_failover();
        assert_eq!(a.preferred(), "b:1");
        assert_eq!(a.failovers(), 1);
        assert_eq!(a, AuthAddrs::parse("a:1,b:1").unwrap());
    }
}
