//! `ymera-code-analysis`: the code-analysis agent.

use ymera_core::config::ServiceConfig;

#[tokio::main]
async fn main() {
    let config = ServiceConfig::load_or_exit("ymera-code-analysis");
    if let Err(err) = ymera_code_analysis::run(config).await {
        eprintln!("ymera-code-analysis: {err}");
        std::process::exit(err.exit_code());
    }
}
