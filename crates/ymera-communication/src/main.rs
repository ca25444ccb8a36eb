//! `ymera-communication`: the communication agent process.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-communication", |config, env| async move {
        let settings = ymera_communication::settings::CommSettings::read(&env)?;
        ymera_communication::run(config, settings).await
    })
}
