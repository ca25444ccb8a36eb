//! The gateway against real servers (nats-server, PostgreSQL, Redis) and the
//! real service binaries, through real HTTP clients (reqwest, and the Python
//! tools of the repo venv: schemathesis, standardwebhooks, httpx-sse).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod collab;
mod common;
mod events;
mod openapi;
mod rest;
mod webhooks;
