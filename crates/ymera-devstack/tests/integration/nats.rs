use std::fs;

use ymera_devstack::{DevstackError, NatsOptions, NatsServer};

use crate::common::{TIMEOUT, eventually, http_status, nats_info_line, nats_request, pid_alive};

#[test]
fn starts_with_jetstream_on_a_free_port_and_serves_clients() {
    let server = NatsServer::start().unwrap();

    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), server.monitor_port());
    let info = nats_info_line(server.port());
    assert!(info.starts_with("INFO {"), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert_eq!(
        http_status(server.monitor_port(), "/healthz?js-enabled-only=true"),
        "HTTP/1.0 200 OK"
    );
    let created = nats_request(
        server.port(),
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
    );
    assert!(
        created.contains("\"type\":\"io.nats.jetstream.api.v1.stream_create_response\""),
        "{created}"
    );
    assert!(!created.contains("\"error\""), "{created}");
}

#[test]
fn kill_then_restart_keeps_the_port_and_the_jetstream_data() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    nats_request(
        port,
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
    );
    let ack = nats_request(port, "orders.created", "order 1");
    assert!(ack.contains("\"seq\":1"), "publish ack: {ack}");

    let crashed_pid = server.pid();
    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(!pid_alive(crashed_pid));
    assert!(server.store_dir().join("jetstream").is_dir());

    server.restart().unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), crashed_pid);
    assert!(nats_info_line(port).starts_with("INFO {"));
    let info = nats_request(port, "$JS.API.STREAM.INFO.ORDERS", "");
    assert!(
        info.contains("\"messages\":1"),
        "stream after restart: {info}"
    );
}

#[test]
fn stop_is_graceful_and_restart_serves_again() {
    let mut server = NatsServer::start().unwrap();
    server.stop().unwrap();
    assert!(!server.is_running());
    let log = fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("Trapped \"terminated\" signal"), "{log}");

    server.restart().unwrap();
    assert!(nats_info_line(server.port()).starts_with("INFO {"));
}

#[test]
fn options_apply_a_config_file_max_payload_and_no_jetstream() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("server.conf");
    fs::write(&config, "server_name: \"from-config-file\"\n").unwrap();

    let server = NatsServer::start_with(NatsOptions {
        config_file: Some(config),
        max_payload: Some(2 * 1024 * 1024),
        jetstream: false,
        extra_args: vec!["--logtime=false".to_owned()],
        ..Default::default()
    })
    .unwrap();

    let info = nats_info_line(server.port());
    assert!(
        info.contains("\"server_name\":\"from-config-file\""),
        "{info}"
    );
    assert!(info.contains("\"max_payload\":2097152"), "{info}");
    assert!(!info.contains("\"jetstream\":true"), "{info}");
}

#[test]
fn a_server_that_cannot_start_fails_with_its_log() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("broken.conf");
    fs::write(&config, "this is { not valid\n").unwrap();

    let err = NatsServer::start_with(NatsOptions {
        config_file: Some(config),
        ..NatsOptions::default()
    })
    .unwrap_err();

    assert!(
        matches!(err, DevstackError::ExitedDuringStart { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("nats-server exited while starting"),
        "{message}"
    );
    assert!(
        message.contains("Parse error on line 1"),
        "the log tail is part of the error: {message}"
    );
}

#[test]
fn drop_ends_the_process_and_removes_its_directory() {
    let server = NatsServer::start().unwrap();
    let pid = server.pid();
    let store_dir = server.store_dir().to_path_buf();
    assert!(pid_alive(pid));

    drop(server);

    assert!(
        eventually(TIMEOUT, || !pid_alive(pid)),
        "nats-server {pid} outlived its handle"
    );
    assert!(!store_dir.exists());
}
