//! Security commands: API keys, tokens and the security report.
//!
//! - `ymera keys create --owner alice --tenant acme --permission config:read`
//! - `ymera keys list [--tenant acme|*] [--all]`, `ymera keys revoke <KEY_ID>`
//! - `ymera token issue [--permission P]… [--ttl 900]` (with `--api-key`)
//! - `ymera token verify <TOKEN>`
//! - `ymera token revoke <TOKEN>` or `ymera token revoke --jti <JTI>` (admin)
//! - `ymera security report [--tenant acme|*]`

use std::process::ExitCode;

use comfy_table::Table;
use serde_json::{Value, json};

use crate::context::Context;

/// Commands of this area (top-level: `keys`, `token`, `security`).
#[derive(Debug, clap::Subcommand)]
pub enum SecurityCommand {
    /// Manage API keys (needs security:admin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exchange an API key for a short-lived token, or check a token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Security reports (needs security:admin).
    #[command(subcommand)]
    Security(SecuritySubcommand),
}

/// `ymera keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; the key is printed once and cannot be shown again.
    Create {
        /// Who the key is for.
        #[arg(long)]
        owner: String,
        /// Tenant (default: the caller's).
        #[arg(long)]
        tenant: Option<String>,
        /// A permission (repeatable), e.g. config:read.
        #[arg(long = "permission", short = 'p', required = true)]
        permissions: Vec<String>,
        /// Lifetime in days (1-365, default 30).
        #[arg(long)]
        expires_days: Option<i64>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// List keys (never secrets).
    List {
        /// Tenant (default: the caller's; `*` = all, for system admins).
        #[arg(long)]
        tenant: Option<String>,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Revoke a key by id.
    Revoke {
        /// The 12-character key id.
        key_id: String,
    },
}

/// `ymera token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a token for the API key given with --api-key.
    Issue {
        /// Restrict to these permissions (repeatable; default: all of the key's).
        #[arg(long = "permission", short = 'p')]
        permissions: Vec<String>,
        /// Lifetime in seconds (60-3600, default 900).
        #[arg(long)]
        ttl: Option<i64>,
    },
    /// Verify a token and print its claims.
    Verify {
        /// The JWT.
        token: String,
    },
    /// Revoke a token until it expires: the token itself, or its id with
    /// security:admin. Every service refuses it from the next request on.
    Revoke {
        /// The JWT.
        #[arg(required_unless_present = "jti", conflicts_with = "jti")]
        token: Option<String>,
        /// The token id (`jti`) instead of the token.
        #[arg(long)]
        jti: Option<String>,
    },
}

/// `ymera security …`
#[derive(Debug, clap::Subcommand)]
pub enum SecuritySubcommand {
    /// Keys, active keys, events in the last 24 h, most active users.
    Report {
        /// Tenant (`*` = all, for system admins).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs one command.
pub async fn run(command: SecurityCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    match command {
        SecurityCommand::Keys(KeysCommand::Create {
            owner,
            tenant,
            permissions,
            expires_days,
            description,
        }) => {
            let mut body = json!({"owner": owner, "permissions": permissions});
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            if let Some(d) = expires_days {
                body["expires_in_days"] = json!(d);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let created: Value = client.request("security.keys.create", &body).await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created["key"].as_str().unwrap_or_default());
                eprintln!(
                    "key {} for {} (tenant {}), expires {} — store it now: it cannot be shown again",
                    created["key_id"].as_str().unwrap_or_default(),
                    created["owner"].as_str().unwrap_or_default(),
                    created["tenant"].as_str().unwrap_or_default(),
                    created["expires_at"].as_str().unwrap_or_default(),
                );
            }
        }
        SecurityCommand::Keys(KeysCommand::List { tenant, all, limit }) => {
            let mut body = json!({"include_revoked": all, "limit": limit});
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            let reply: Value = client.request("security.keys.list", &body).await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print_keys(&reply);
            }
        }
        SecurityCommand::Keys(KeysCommand::Revoke { key_id }) => {
            let reply: Value = client
                .request("security.keys.revoke", &json!({"key_id": key_id}))
                .await?;
            print_value(ctx, &reply, || {
                format!(
                    "revoked {} ({})",
                    reply["key_id"].as_str().unwrap_or_default(),
                    reply["owner"].as_str().unwrap_or_default()
                )
            })?;
        }
        SecurityCommand::Token(TokenCommand::Issue { permissions, ttl }) => {
            let mut body = json!({});
            if !permissions.is_empty() {
                body["permissions"] = json!(permissions);
            }
            if let Some(t) = ttl {
                body["ttl_seconds"] = json!(t);
            }
            let reply: Value = client.request("security.tokens.issue", &body).await?;
            print_value(ctx, &reply, || {
                reply["token"].as_str().unwrap_or_default().to_owned()
            })?;
        }
        SecurityCommand::Token(TokenCommand::Verify { token }) => {
            let reply: Value = client
                .request("security.tokens.verify", &json!({"token": token}))
                .await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        SecurityCommand::Token(TokenCommand::Revoke { token, jti }) => {
            let body = match (token, jti) {
                (Some(token), _) => json!({"token": token}),
                (None, jti) => json!({"jti": jti}),
            };
            let reply: Value = client.request("security.tokens.revoke", &body).await?;
            print_value(ctx, &reply, || {
                format!(
                    "revoked token {} until {}",
                    reply["jti"].as_str().unwrap_or_default(),
                    reply["until"].as_str().unwrap_or_default()
                )
            })?;
        }
        SecurityCommand::Security(SecuritySubcommand::Report { tenant }) => {
            let mut body = json!({});
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            let reply: Value = client.request("security.events.report", &body).await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print_report(&reply);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_value(ctx: &Context, value: &Value, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human());
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_keys(reply: &Value) {
    let mut table = Table::new();
    table.set_header([
        "key id",
        "owner",
        "tenant",
        "permissions",
        "status",
        "expires",
        "last used",
        "uses",
    ]);
    for key in reply["keys"].as_array().into_iter().flatten() {
        let permissions = key["permissions"]
            .as_array()
            .map(|p| p.iter().map(text).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        table.add_row([
            text(&key["key_id"]),
            text(&key["owner"]),
            text(&key["tenant"]),
            permissions,
            text(&key["status"]),
            text(&key["expires_at"]),
            text(&key["last_used"]),
            text(&key["usage_count"]),
        ]);
    }
    println!("{table}");
}

fn print_report(report: &Value) {
    let mut summary = Table::new();
    summary.set_header(["metric", "value"]);
    for field in ["total_api_keys", "active_api_keys", "security_events_24h"] {
        summary.add_row([field.to_owned(), text(&report[field])]);
    }
    println!("{summary}");
    let mut events = Table::new();
    events.set_header(["event (24 h)", "count"]);
    if let Some(map) = report["event_breakdown"].as_object() {
        for (name, count) in map {
            events.add_row([name.clone(), text(count)]);
        }
    }
    println!("{events}");
    let mut users = Table::new();
    users.set_header(["most active user", "uses"]);
    for user in report["most_active_users"].as_array().into_iter().flatten() {
        users.add_row([text(&user["user"]), text(&user["usage_count"])]);
    }
    println!("{users}");
}
