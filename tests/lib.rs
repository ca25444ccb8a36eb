//! End-to-end suites live in `e2e/`.
