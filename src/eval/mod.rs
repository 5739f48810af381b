//! Evaluations: turning stored traces into scores.
//!
//! [`evaluator`] decides what an evaluation runs (a rule, or the LLM judge
//! with a rubric) from its type, metric and config; [`catalog`] holds the
//! presets; [`judge`] talks to the operator's judge endpoint; [`queue`]
//! runs the durable queue and [`auto`] queues the auto-evaluation rules'
//! evaluations for new traces; [`keys`] opens organisations' own judge
//! keys for the calls that use them.
//!
//! [`rules`] holds the deterministic, in-process rule evaluators. It is pure
//! (no I/O, no clock, no store): the queue loads a trace, builds a
//! [`rules::Subject`] from it and stores the [`rules::Verdict`]. `params`
//! reads and compiles a rule config's parameters, `field` picks the text a
//! rule looks at, and `checks` scores it. The `pii` and `refusal` rules live
//! in their own modules, and `text` holds the helpers they share.

pub mod auto;
pub mod catalog;
mod checks;
pub mod evaluator;
pub mod experiment;
mod field;
pub mod judge;
pub mod keys;
mod params;
mod pii;
pub mod queue;
mod refusal;
pub mod rules;
#[cfg(test)]
mod test_support;
mod text;
