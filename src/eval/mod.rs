//! Evaluations: turning stored traces into scores.
//!
//! [`rules`] holds the deterministic, in-process rule evaluators. It is pure
//! (no I/O, no clock, no store): the queue loads a trace, builds a
//! [`rules::Subject`] from it and stores the [`rules::Verdict`]. `params`
//! reads and compiles a rule config's parameters, `field` picks the text a
//! rule looks at, and `checks` scores it. The `pii` and `refusal` rules live
//! in their own modules, and `text` holds the helpers they share.

pub mod catalog;
mod checks;
mod field;
pub mod judge;
mod params;
mod pii;
mod refusal;
pub mod rules;
#[cfg(test)]
mod test_support;
mod text;
