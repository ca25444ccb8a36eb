//! The example service of the runtime as a process: configuration from the
//! environment (exit 64 on a bad setting), graceful shutdown on SIGTERM.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-example", |config, _env| async move {
        let runtime =
            ymera_core::runtime::Runtime::start(ymera_core::example::NAME, config).await?;
        ymera_core::example::service().serve(runtime).await
    })
}
