//! `ymera-security`: reads configuration and runs the security service.
//!
//! `ymera-security [--bootstrap-admin-key FILE]`: with the flag (or
//! `YMERA_BOOTSTRAP_ADMIN_KEY=FILE`) the service first makes sure FILE holds
//! a valid admin key (creating one, mode 0600), then serves.

use std::process::ExitCode;

use ymera_core::config::ServiceConfig;
use ymera_security::SecuritySettings;

const PROGRAM: &str = "ymera-security";

fn usage_error(message: &str) -> ExitCode {
    eprintln!("{PROGRAM}: {message}");
    eprintln!("usage: {PROGRAM} [--bootstrap-admin-key FILE]");
    ExitCode::from(64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut bootstrap = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bootstrap-admin-key" => match args.next() {
                Some(path) => bootstrap = Some(path.into()),
                None => return usage_error("--bootstrap-admin-key needs a FILE"),
            },
            "-h" | "--help" => {
                println!("usage: {PROGRAM} [--bootstrap-admin-key FILE]");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let config = ServiceConfig::load_or_exit(PROGRAM);
    let mut settings = match SecuritySettings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{PROGRAM}: {err}");
            return ExitCode::from(64);
        }
    };
    if bootstrap.is_some() {
        settings.bootstrap_admin_key = bootstrap;
    }
    match ymera_security::run(config, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{PROGRAM}: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(70))
        }
    }
}
