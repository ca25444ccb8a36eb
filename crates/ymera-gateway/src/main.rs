//! `ymera-gateway`: the HTTP edge of the platform.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-gateway", |config, env| async move {
        let settings = ymera_gateway::Settings::read(&env)?;
        ymera_gateway::run(config, settings).await
    })
}
