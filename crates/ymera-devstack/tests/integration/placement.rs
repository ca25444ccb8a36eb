//! Kept directories and fixed ports (what the local stack `ymera up` uses):
//! data survives a stop and a new start in the same directory.

use ymera_devstack::{
    NatsOptions, NatsServer, Postgres, PostgresOptions, Redis, RedisOptions, free_port,
};

use crate::common::psql;

#[test]
fn postgres_in_a_kept_directory_keeps_its_data_across_starts() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pg");
    let port = free_port().unwrap();
    let options = PostgresOptions {
        dir: Some(dir.clone()),
        port: Some(port),
    };
    {
        let pg = Postgres::start_with(options.clone()).unwrap();
        assert_eq!(pg.port(), port);
        psql(
            pg.bin_dir(),
            &pg.url(),
            "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42);",
        );
    }
    assert!(
        dir.join("data/PG_VERSION").is_file(),
        "directory kept after drop"
    );
    let pg = Postgres::start_with(options).unwrap();
    assert_eq!(
        psql(pg.bin_dir(), &pg.url(), "SELECT v FROM kept").trim(),
        "42"
    );
}

#[test]
fn nats_and_redis_on_fixed_ports_in_kept_directories() {
    let root = tempfile::tempdir().unwrap();
    let (port, monitor) = (free_port().unwrap(), free_port().unwrap());
    let nats = NatsServer::start_with(NatsOptions {
        dir: Some(root.path().join("nats")),
        port: Some(port),
        monitor_port: Some(monitor),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(
        nats.store_dir()
            .starts_with(root.path().canonicalize().unwrap())
    );
    let redis_port = free_port().unwrap();
    let redis = Redis::start_with(RedisOptions {
        dir: Some(root.path().join("redis")),
        port: Some(redis_port),
    })
    .unwrap();
    assert_eq!(redis.port(), redis_port);
    drop((nats, redis));
    assert!(root.path().join("nats/store").is_dir(), "kept after drop");
}
