//! `ymera-communication`: the communication agent process.

fn main() -> std::process::ExitCode {
    let config = ymera_core::config::ServiceConfig::load_or_exit("ymera-communication");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ymera-communication: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(70);
        }
    };
    match runtime.block_on(ymera_communication::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ymera-communication: {err}");
            std::process::ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(70))
        }
    }
}
