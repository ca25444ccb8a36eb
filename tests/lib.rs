//! Cross-service end-to-end suites live in `e2e/` (one test binary). The
//! binary `ymera-example` runs the runtime's example service as a real
//! process, for the tests that need signals and exit codes.
