//! The `ymera-config` binary refuses bad configuration with exit code 64.

use std::process::Command;

fn run(vars: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymera-config"));
    cmd.env_clear().env("NATS_URL", "nats://127.0.0.1:1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    let (code, stderr) = run(&[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("POSTGRES_URL"), "{stderr}");
    let (code, stderr) = run(&[
        ("POSTGRES_URL", "postgres://x@127.0.0.1:1/db"),
        ("CONFIG_MAX_VERSIONS", "0"),
    ]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("CONFIG_MAX_VERSIONS"), "{stderr}");
}
