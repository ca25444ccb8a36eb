//! `ymera-communication`: the communication agent process.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-communication", |config, env| async move {
        let settings = ymera_communication::settings::CommSettings::read(&env)?;
        // Read again where the streams are made; checked here so a malformed value stops
        // the process at start (exit 64) instead of failing stream set-up.
        ymera_communication::streams::configured_compression(&env)?;
        ymera_communication::run(config, settings).await
    })
}
