//! `ymera-code-analysis`: the code-analysis agent.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-code-analysis", |config, _env| async move {
        ymera_code_analysis::run(config).await
    })
}
