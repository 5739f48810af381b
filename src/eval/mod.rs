//! Evaluations: turning stored traces into scores.
//!
//! [`rules`] holds the deterministic, in-process rule evaluators. It is pure
//! (no I/O, no clock, no store): the queue loads a trace, builds a
//! [`rules::Subject`] from it and stores the [`rules::Verdict`].

pub mod rules;
