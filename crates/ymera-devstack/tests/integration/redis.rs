use ymera_devstack::Redis;

use crate::common::{TIMEOUT, eventually, pid_alive, redis_command};

#[test]
fn starts_on_a_free_port_and_answers_ping() {
    let redis = Redis::start().unwrap();

    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis_command(redis.port(), "PING"), "+PONG");
}

#[test]
fn kill_then_restart_serves_on_the_same_port_without_the_old_data() {
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    assert_eq!(redis_command(port, "SET greeting hello"), "+OK");

    let crashed_pid = redis.pid();
    redis.kill().unwrap();
    assert!(!redis.is_running());
    assert!(!pid_alive(crashed_pid));

    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(redis_command(port, "PING"), "+PONG");
    assert_eq!(redis_command(port, "GET greeting"), "$-1", "no persistence");
}

#[test]
fn stop_then_restart() {
    let mut redis = Redis::start().unwrap();
    redis.stop().unwrap();
    assert!(!redis.is_running());
    redis.restart().unwrap();
    assert_eq!(redis_command(redis.port(), "PING"), "+PONG");
}

#[test]
fn drop_ends_the_process() {
    let redis = Redis::start().unwrap();
    let pid = redis.pid();
    drop(redis);
    assert!(
        eventually(TIMEOUT, || !pid_alive(pid)),
        "redis-server {pid} outlived its handle"
    );
}
