//! Ymera core.
