//! The memory request bodies and their decoding may take at once
//! (`limits.request_memory_max_bytes`).
//!
//! A body is charged against one budget before it is read, for all the
//! memory it is expected to take until its response is ready: its
//! `Content-Length` (or, for a chunked body, each piece as it arrives)
//! times what decoding such a body usually takes besides (3 for ingest).
//! Ingest then counts what the body holds without decoding it and, for a
//! body that will take more than that (many tiny spans), charges the rest
//! before it decodes. Only the first charge waits, a little: a request
//! holding a charge never waits for more, or two could wait for each other.
//! A request that cannot get its charge is answered 503 with
//! `Retry-After`, so a burst of large uploads queues or is turned away
//! instead of taking the process's memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AppError;

/// The budget is counted in KiB, so a `u32` of permits spans terabytes.
const UNIT: usize = 1024;
/// How long a request may wait for its charge before it is answered 503.
const WAIT: Duration = Duration::from_secs(2);
/// What a client is told to wait before it tries again.
const RETRY_AFTER_S: u64 = 1;

/// Bytes of request bodies in flight, against a fixed total.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total_units: usize,
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    pub fn new(total_bytes: usize) -> BodyBudget {
        let total_units = (total_bytes.div_ceil(UNIT)).min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Charges `bytes` to the request's `charges`, waiting a little for
    /// others to finish; 503 past that. A request never asks for more than
    /// the whole budget: one whose estimate is larger waits until it can run
    /// alone.
    pub async fn charge(&self, charges: &Charges, bytes: usize) -> Result<(), AppError> {
        let wanted = self.within_budget(charges, bytes);
        match tokio::time::timeout(WAIT, self.permits.clone().acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => {
                charges.hold(permit, wanted);
                Ok(())
            }
            _ => Err(busy()),
        }
    }

    /// Charges `bytes` now or not at all: for a request already holding a
    /// charge, which must not wait for more while it holds it (two such
    /// would wait for each other).
    pub fn charge_now(&self, charges: &Charges, bytes: usize) -> Result<(), AppError> {
        let wanted = self.within_budget(charges, bytes);
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| busy())?;
        charges.hold(permit, wanted);
        Ok(())
    }

    /// Brings the request's charge up to `total` bytes, now or not at all;
    /// nothing to do when it holds that much already.
    pub fn top_up(&self, charges: &Charges, total: usize) -> Result<(), AppError> {
        let held = charges.held_units().saturating_mul(UNIT);
        match total.checked_sub(held) {
            Some(more) if more > 0 => self.charge_now(charges, more),
            _ => Ok(()),
        }
    }

    /// `bytes` in units, but no more than what the request does not hold
    /// yet of the whole budget.
    fn within_budget(&self, charges: &Charges, bytes: usize) -> u32 {
        let room = self.total_units.saturating_sub(charges.held_units());
        units(bytes).min(u32::try_from(room).unwrap_or(u32::MAX))
    }

    /// Bytes charged at this moment.
    pub fn in_use(&self) -> usize {
        self.total_units
            .saturating_sub(self.permits.available_permits())
            .saturating_mul(UNIT)
    }
}

fn busy() -> AppError {
    AppError::Busy {
        message: "the server holds as much request data as it may at once; retry shortly".into(),
        retry_after: RETRY_AFTER_S,
    }
}

/// The charges of one request, held until its response is ready and
/// given back when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Charges(Arc<Mutex<Held>>);

#[derive(Default)]
struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    units: usize,
}

impl Charges {
    fn hold(&self, permit: OwnedSemaphorePermit, units: u32) {
        if let Ok(mut held) = self.0.lock() {
            held.permits.push(permit);
            held.units += units as usize;
        }
    }

    fn held_units(&self) -> usize {
        self.0.lock().map_or(0, |held| held.units)
    }
}

/// Gives each request a place for its charges and releases them once the
/// handler has answered.
pub async fn hold_charges(mut req: Request, next: Next) -> Response {
    let charges = Charges::default();
    req.extensions_mut().insert(charges.clone());
    let response = next.run(req).await;
    drop(charges);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_room_and_are_given_back_with_the_request() {
        let budget = Arc::new(BodyBudget::new(10 * UNIT));
        let first = Charges::default();
        budget.charge(&first, 6 * UNIT).await.expect("room");
        assert_eq!(budget.in_use(), 6 * UNIT);
        let second = Charges::default();
        assert!(budget.charge_now(&second, 5 * UNIT).is_err(), "no room");
        // A waiting charge gets its room as soon as the first request ends.
        let waiting = tokio::spawn({
            let (budget, second) = (budget.clone(), second.clone());
            async move { budget.charge(&second, 5 * UNIT).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        waiting.await.expect("task").expect("charged after release");
        assert_eq!(budget.in_use(), 5 * UNIT);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_that_cannot_be_had_is_a_503_with_retry_after() {
        let budget = BodyBudget::new(4 * UNIT);
        let held = Charges::default();
        budget.charge(&held, 3 * UNIT).await.expect("room");
        let refused = budget
            .charge(&Charges::default(), 2 * UNIT)
            .await
            .expect_err("no room within the wait");
        assert!(matches!(
            refused,
            AppError::Busy {
                retry_after: RETRY_AFTER_S,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_runs_alone_instead_of_never() {
        let budget = BodyBudget::new(4 * UNIT);
        let alone = Charges::default();
        budget.charge(&alone, 3 * UNIT).await.expect("its body");
        // Its decoding is estimated past the budget: it takes what is left.
        budget.top_up(&alone, 12 * UNIT).expect("the rest");
        assert_eq!(budget.in_use(), 4 * UNIT);
        assert!(budget.charge_now(&Charges::default(), 1).is_err());
    }

    #[tokio::test]
    async fn a_top_up_charges_only_what_is_missing_and_never_waits() {
        let budget = BodyBudget::new(10 * UNIT);
        let request = Charges::default();
        budget.charge(&request, 6 * UNIT).await.expect("room");
        budget
            .top_up(&request, 4 * UNIT)
            .expect("holds enough already");
        assert_eq!(budget.in_use(), 6 * UNIT);
        budget.top_up(&request, 8 * UNIT).expect("two more");
        assert_eq!(budget.in_use(), 8 * UNIT);
        let other = Charges::default();
        budget.charge(&other, 2 * UNIT).await.expect("the last two");
        assert!(budget.top_up(&other, 3 * UNIT).is_err(), "no room, no wait");
        drop(request);
        assert_eq!(budget.in_use(), 2 * UNIT);
    }
}
