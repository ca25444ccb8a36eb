//! `ymera-config`: the config manager service.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-config", |config, env| async move {
        let settings = ymera_config::Settings::read(&env)?;
        ymera_config::run(config, settings).await
    })
}
