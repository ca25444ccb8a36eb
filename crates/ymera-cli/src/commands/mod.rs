//! Client commands, one module per service (each a NATS client of that
//! service's endpoints), and service discovery (`ymera health`,
//! `ymera services`).

pub mod agents;
pub mod analyze;
pub mod comm;
pub mod config;
pub mod discovery;
pub mod draft;
pub mod rollout;
pub mod security;
pub mod stack_health;
