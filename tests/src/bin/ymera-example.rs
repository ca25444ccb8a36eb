//! The example service of the runtime as a process: configuration from the
//! environment (exit 64 on a bad setting), graceful shutdown on SIGTERM.

use std::process::ExitCode;

use ymera_core::config::ServiceConfig;
use ymera_core::runtime::Runtime;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ServiceConfig::load_or_exit("ymera-example");
    let result = match Runtime::start(ymera_core::example::NAME, config).await {
        Ok(runtime) => ymera_core::example::service().serve(runtime).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ymera-example: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}
