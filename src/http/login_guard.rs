//! Limits on password guessing at `POST /v1/auth/login`, after the smart
//! lockout of Microsoft Entra ID: a flood of wrong passwords slows the
//! guessing down without locking the account's owner out.
//!
//! - An attempt is counted before its password is checked (a reservation
//!   that a success takes back), so attempts sent in parallel can never
//!   pass a limit: of 60 sent at once for one email, 5 are checked.
//! - One email from one address: 5 failures in 15 minutes, then 429 for
//!   that pair until the oldest failure is 15 minutes old.
//! - One address, any emails: 20 failures in 15 minutes, then 429.
//! - One email from every address together: past 10 failures in 15
//!   minutes, addresses the account has not logged in from (unfamiliar
//!   ones) wait between attempts, 30 seconds doubling with each further
//!   failure up to 15 minutes. Addresses it has logged in from keep
//!   trying at once, held only by their own pair limit, so a stranger's
//!   flood from elsewhere cannot stop the owner.
//!
//! Everything is in memory: a restart forgets it, which only ever loosens
//! the limits for a moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures of one email from one address before it is refused.
const MAX_PAIR_FAILURES: usize = 5;
/// Failures from one address, any emails, before it is refused.
const MAX_ADDRESS_FAILURES: usize = 20;
/// Failures of one email, all addresses, before unfamiliar ones slow down.
const EMAIL_SLOWDOWN_AFTER: usize = 10;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first wait of an unfamiliar address, doubling per failure.
const FIRST_WAIT: Duration = Duration::from_secs(30);
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered per account as familiar.
const FAMILIAR_PER_EMAIL: usize = 16;
/// Beyond this many keys, expired entries are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct LoginGuard(Mutex<Books>);

#[derive(Default)]
struct Books {
    /// Failures, and attempts not decided yet, by key (`pair`, `address`
    /// and `email` keys below).
    failures: HashMap<String, VecDeque<Instant>>,
    /// Addresses each email has logged in from, most recent last.
    familiar: HashMap<String, VecDeque<String>>,
    /// When an email's unfamiliar addresses may try again, and how many
    /// times the wait has doubled.
    slowed: HashMap<String, (Instant, u32)>,
}

/// An attempt counted before its password is checked; tell the guard how
/// it ended with [`LoginGuard::succeeded`] or [`LoginGuard::failed`]. One
/// never told stays counted as a failure.
pub struct Attempt {
    email: String,
    keys: Vec<String>,
    at: Instant,
    familiar: bool,
}

/// 429: try again after this many seconds.
pub struct Refused {
    pub retry_after: u64,
}

fn pair_key(email: &str, address: &str) -> String {
    format!("pair:{email}|{address}")
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

fn email_key(email: &str) -> String {
    format!("email:{email}")
}

/// Whole seconds, rounded up: a client that waits them is let through.
fn seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Books {
    /// The key's failures within the window, the older ones dropped.
    fn recent(&mut self, key: &str, now: Instant) -> usize {
        let Some(list) = self.failures.get_mut(key) else {
            return 0;
        };
        while list
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOW)
        {
            list.pop_front();
        }
        list.len()
    }

    /// When the key's oldest failure leaves the window.
    fn clears_in(&self, key: &str, now: Instant) -> u64 {
        self.failures
            .get(key)
            .and_then(|l| l.front())
            .map_or(1, |oldest| {
                seconds(WINDOW.saturating_sub(now.duration_since(*oldest)))
            })
    }

    fn prune(&mut self, now: Instant) {
        if self.failures.len() > MAX_KEYS {
            self.failures
                .retain(|_, l| l.back().is_some_and(|at| now.duration_since(*at) < WINDOW));
        }
        if self.slowed.len() > MAX_KEYS {
            self.slowed.retain(|_, (until, _)| *until > now);
        }
        if self.familiar.len() > MAX_KEYS {
            self.familiar.clear();
        }
    }
}

impl LoginGuard {
    /// Counts an attempt at `email` from `address`, or refuses it.
    pub fn begin(&self, email: &str, address: Option<&str>) -> Result<Attempt, Refused> {
        let now = Instant::now();
        let Ok(mut books) = self.0.lock() else {
            // A poisoned lock refuses rather than letting guesses through.
            return Err(Refused { retry_after: 1 });
        };
        books.prune(now);
        let mut keys = vec![email_key(email)];
        let mut familiar = false;
        if let Some(address) = address {
            for (key, max) in [
                (pair_key(email, address), MAX_PAIR_FAILURES),
                (address_key(address), MAX_ADDRESS_FAILURES),
            ] {
                if books.recent(&key, now) >= max {
                    return Err(Refused {
                        retry_after: books.clears_in(&key, now),
                    });
                }
                keys.push(key);
            }
            familiar = books
                .familiar
                .get(email)
                .is_some_and(|known| known.iter().any(|a| a == address));
        }
        if !familiar {
            if let Some((until, _)) = books.slowed.get(email) {
                if *until > now {
                    return Err(Refused {
                        retry_after: seconds(*until - now),
                    });
                }
            }
        }
        for key in &keys {
            books
                .failures
                .entry(key.clone())
                .or_default()
                .push_back(now);
        }
        Ok(Attempt {
            email: email.to_owned(),
            keys,
            at: now,
            familiar,
        })
    }

    /// The password was right: the attempt is taken back, the account's
    /// failures and slowdown are forgotten, and the address becomes familiar.
    pub fn succeeded(&self, attempt: Attempt, address: Option<&str>) {
        let Ok(mut books) = self.0.lock() else {
            return;
        };
        for key in &attempt.keys {
            if let Some(list) = books.failures.get_mut(key) {
                if let Some(i) = list.iter().rposition(|at| *at == attempt.at) {
                    list.remove(i);
                }
            }
        }
        books.failures.remove(&email_key(&attempt.email));
        if let Some(address) = address {
            books.failures.remove(&pair_key(&attempt.email, address));
            let known = books.familiar.entry(attempt.email.clone()).or_default();
            known.retain(|a| a != address);
            known.push_back(address.to_owned());
            while known.len() > FAMILIAR_PER_EMAIL {
                known.pop_front();
            }
        }
        books.slowed.remove(&attempt.email);
    }

    /// The password was wrong: the attempt stays counted, and past the
    /// email's threshold its unfamiliar addresses wait longer.
    pub fn failed(&self, attempt: Attempt) {
        let now = Instant::now();
        let Ok(mut books) = self.0.lock() else {
            return;
        };
        if attempt.familiar {
            return;
        }
        if books.recent(&email_key(&attempt.email), now) > EMAIL_SLOWDOWN_AFTER {
            let doublings = books.slowed.get(&attempt.email).map_or(0, |(_, d)| *d);
            let wait = FIRST_WAIT
                .saturating_mul(1 << doublings.min(16))
                .min(LONGEST_WAIT);
            books
                .slowed
                .insert(attempt.email, (now + wait, doublings.saturating_add(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_attempts_are_counted_before_they_are_checked() {
        let guard = LoginGuard::default();
        let attempts: Vec<_> = (0..60)
            .filter_map(|_| guard.begin("a@x", Some("10.0.0.1")).ok())
            .collect();
        assert_eq!(attempts.len(), MAX_PAIR_FAILURES);
        for attempt in attempts {
            guard.failed(attempt);
        }
        assert!(guard.begin("a@x", Some("10.0.0.1")).is_err());
    }

    #[test]
    fn a_success_takes_its_attempt_back_and_makes_the_address_familiar() {
        let guard = LoginGuard::default();
        for _ in 0..4 {
            let a = guard.begin("a@x", Some("10.0.0.1")).ok().expect("allowed");
            guard.failed(a);
        }
        let ok = guard.begin("a@x", Some("10.0.0.1")).ok().expect("allowed");
        guard.succeeded(ok, Some("10.0.0.1"));
        // The pair's failures are forgotten: five more may be tried.
        for _ in 0..5 {
            let a = guard.begin("a@x", Some("10.0.0.1")).ok().expect("allowed");
            guard.failed(a);
        }
        assert!(guard.begin("a@x", Some("10.0.0.1")).is_err());
    }

    #[test]
    fn guessing_from_many_addresses_slows_strangers_not_the_owner() {
        let guard = LoginGuard::default();
        let ok = guard.begin("a@x", Some("192.0.2.1")).ok().expect("first");
        guard.succeeded(ok, Some("192.0.2.1"));
        // Eleven strangers, one failure each: past ten, strangers wait.
        for n in 0..=EMAIL_SLOWDOWN_AFTER {
            let address = format!("203.0.113.{n}");
            let a = guard.begin("a@x", Some(&address)).ok().expect("stranger");
            guard.failed(a);
        }
        let Err(Refused { retry_after }) = guard.begin("a@x", Some("203.0.113.200")) else {
            panic!("a twelfth stranger is not slowed down");
        };
        assert_eq!(retry_after, FIRST_WAIT.as_secs());
        // The owner, from where they logged in before, is not.
        assert!(guard.begin("a@x", Some("192.0.2.1")).is_ok());
        // Another account is not either.
        assert!(guard.begin("b@x", Some("203.0.113.201")).is_ok());
    }
}
