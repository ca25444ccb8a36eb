//! `ymera-config`: the config manager service.

use ymera_core::config::ServiceConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = ServiceConfig::load_or_exit("ymera-config");
    let settings = ymera_config::Settings::load_or_exit("ymera-config");
    match ymera_config::run(config, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ymera-config: {err}");
            std::process::ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(70))
        }
    }
}
