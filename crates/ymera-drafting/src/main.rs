//! `ymera-drafting`: the drafting agent.

use ymera_core::config::ServiceConfig;

#[tokio::main]
async fn main() {
    let config = ServiceConfig::load_or_exit("ymera-drafting");
    if let Err(err) = ymera_drafting::run(config).await {
        eprintln!("ymera-drafting: {err}");
        std::process::exit(err.exit_code());
    }
}
