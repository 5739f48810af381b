//! The evaluator catalog (being written).
