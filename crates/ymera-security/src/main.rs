//! `ymera-security`: reads configuration and runs the security service.
//!
//! `ymera-security [--bootstrap-admin-key FILE]`: with the flag (or
//! `YMERA_BOOTSTRAP_ADMIN_KEY=FILE`) the service first makes sure FILE holds
//! a valid admin key (creating one, mode 0600), then serves.

use std::path::PathBuf;
use std::process::ExitCode;

const PROGRAM: &str = "ymera-security";
const USAGE: &str = "usage: ymera-security [--bootstrap-admin-key FILE]";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("health") {
        // The container healthcheck (ymera_core::service::health).
        return ymera_core::service::health(PROGRAM);
    }
    let bootstrap = match arguments(std::env::args().skip(1)) {
        Ok(Arguments::Run { bootstrap }) => bootstrap,
        Ok(Arguments::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{PROGRAM}: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    };
    ymera_core::service::main(PROGRAM, |config, env| async move {
        let mut settings = ymera_security::SecuritySettings::read(&env)?;
        if bootstrap.is_some() {
            settings.bootstrap_admin_key = bootstrap;
        }
        ymera_security::run(config, settings).await
    })
}

enum Arguments {
    Help,
    Run { bootstrap: Option<PathBuf> },
}

fn arguments(mut args: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let mut bootstrap = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bootstrap-admin-key" => match args.next() {
                Some(path) => bootstrap = Some(path.into()),
                None => return Err("--bootstrap-admin-key needs a FILE".into()),
            },
            "-h" | "--help" => return Ok(Arguments::Help),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Arguments::Run { bootstrap })
}
