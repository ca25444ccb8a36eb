//! `ymera-drafting`: the drafting agent.

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-drafting", |config, env| async move {
        let settings = ymera_drafting::Settings::read(&env)?;
        ymera_drafting::run(config, settings).await
    })
}
