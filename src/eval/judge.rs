//! LLM judges (being written).
