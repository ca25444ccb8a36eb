//! Configuration commands (`ymera config …`), clients of the config manager.
//!
//! - `ymera config get billing -e production [--pointer /db/pool] [--raw]`
//! - `ymera config set billing -e production [FILE|-] [--merge] [--pointer P --value JSON] [--expected-version N]`
//! - `ymera config delete billing -e production [--pointer P]`
//! - `ymera config history billing -e production`, `diff billing 3 [7]`, `rollback billing 3`
//! - `ymera config watch billing -e production` (prints each change until Ctrl-C)
//! - `ymera config export -e production [-o FILE]`, `import FILE [--dry-run]`
//! - `ymera config schema set billing FILE`, `schema get billing`
//! - `ymera config template set NAME FILE`, `template apply NAME billing -e staging --var port=8080`

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use comfy_table::Table;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use ymera_core::client::ServiceClient;

use crate::context::Context;

/// Commands of this area.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print an agent's effective configuration (or one value, or the raw layer).
    Get {
        /// The agent.
        agent: String,
        /// Environment: base, development, staging or production.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// Only the value at this JSON Pointer, e.g. /db/pool.
        #[arg(long)]
        pointer: Option<String>,
        /// The raw layer instead of the merged document.
        #[arg(long)]
        raw: bool,
    },
    /// Write a layer from FILE or stdin (validated against the agent's schema).
    Set {
        /// The agent.
        agent: String,
        /// JSON file; `-` or absent: stdin (unless --value is given).
        file: Option<PathBuf>,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// Apply the document as a JSON Merge Patch instead of replacing the layer.
        #[arg(long)]
        merge: bool,
        /// Set only the value at this JSON Pointer.
        #[arg(long)]
        pointer: Option<String>,
        /// The value (JSON, or a plain string) instead of FILE.
        #[arg(long)]
        value: Option<String>,
        /// Refuse unless the layer is at this version (0: new).
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Delete a layer, or one value of it.
    Delete {
        /// The agent.
        agent: String,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// Remove only the value at this JSON Pointer.
        #[arg(long)]
        pointer: Option<String>,
        /// Refuse unless the layer is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Retained versions and the audit trail of a layer.
    History {
        /// The agent.
        agent: String,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// At most this many of each (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// The JSON Patch from one version to another (default: the current one).
    Diff {
        /// The agent.
        agent: String,
        /// From this version.
        from: i64,
        /// To this version.
        to: Option<i64>,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
    },
    /// Write an earlier version's content as a new version.
    Rollback {
        /// The agent.
        agent: String,
        /// The version to restore.
        to_version: i64,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// Refuse unless the layer is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Print the effective configuration, then every change, until Ctrl-C.
    Watch {
        /// The agent.
        agent: String,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
    },
    /// Every agent's base and environment layers and schemas, as a bundle.
    Export {
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Validate a bundle as a whole and apply it in one transaction.
    Import {
        /// Bundle file; `-` or absent: stdin.
        file: Option<PathBuf>,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Agent JSON Schemas (draft 2020-12).
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Configuration templates with ${var} placeholders.
    #[command(subcommand)]
    Template(TemplateCommand),
}

/// `ymera config schema …`
#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Set an agent's schema from FILE or stdin (`null` removes it).
    Set {
        /// The agent.
        agent: String,
        /// JSON Schema file; `-` or absent: stdin.
        file: Option<PathBuf>,
    },
    /// Print an agent's schema.
    Get {
        /// The agent.
        agent: String,
    },
}

/// `ymera config template …`
#[derive(Debug, clap::Subcommand)]
pub enum TemplateCommand {
    /// Store a template from FILE or stdin.
    Set {
        /// Template name.
        name: String,
        /// JSON file; `-` or absent: stdin.
        file: Option<PathBuf>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Render a template with variables and write it as an agent's layer.
    Apply {
        /// Template name.
        name: String,
        /// The agent.
        agent: String,
        /// Environment.
        #[arg(long = "env", short = 'e', default_value = "base")]
        environment: String,
        /// A variable NAME=VALUE (VALUE as JSON, else a string); repeatable.
        #[arg(long = "var")]
        vars: Vec<String>,
        /// Refuse unless the layer is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// Runs one command.
pub async fn run(command: ConfigCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    let actor = actor();
    match command {
        ConfigCommand::Get {
            agent,
            environment,
            pointer,
            raw,
        } => {
            let body =
                json!({"agent": agent, "environment": environment, "pointer": pointer, "raw": raw});
            let reply = call(&client, "config.get", &body).await?;
            if ctx.json() {
                print_json(&reply)?;
            } else {
                eprintln!(
                    "# {agent} {environment} version {} ({} by {})",
                    reply["version"],
                    reply["updated_at"].as_str().unwrap_or(""),
                    reply["updated_by"].as_str().unwrap_or("")
                );
                print_json(&reply["config"])?;
            }
        }
        ConfigCommand::Set {
            agent,
            file,
            environment,
            merge,
            pointer,
            value,
            expected_version,
        } => {
            let config = match value {
                Some(v) => parse_value(&v),
                None => read_json(file.as_ref())?,
            };
            let body = json!({"agent": agent, "environment": environment, "config": config,
                "merge": merge, "pointer": pointer, "expected_version": expected_version, "actor": actor});
            let reply = call(&client, "config.set", &body).await?;
            print_write(ctx, &reply)?;
        }
        ConfigCommand::Delete {
            agent,
            environment,
            pointer,
            expected_version,
        } => {
            let body = json!({"agent": agent, "environment": environment, "pointer": pointer,
                "expected_version": expected_version, "actor": actor});
            let reply = call(&client, "config.delete", &body).await?;
            print_write(ctx, &reply)?;
        }
        ConfigCommand::History {
            agent,
            environment,
            limit,
        } => {
            let body = json!({"agent": agent, "environment": environment, "limit": limit});
            let reply = call(&client, "config.history", &body).await?;
            if ctx.json() {
                print_json(&reply)?;
            } else {
                print_history(&reply);
            }
        }
        ConfigCommand::Diff {
            agent,
            from,
            to,
            environment,
        } => {
            let body = json!({"agent": agent, "environment": environment, "from_version": from, "to_version": to});
            let reply = call(&client, "config.diff", &body).await?;
            print_json(if ctx.json() { &reply } else { &reply["patch"] })?;
        }
        ConfigCommand::Rollback {
            agent,
            to_version,
            environment,
            expected_version,
        } => {
            let body = json!({"agent": agent, "environment": environment, "to_version": to_version,
                "expected_version": expected_version, "actor": actor});
            let reply = call(&client, "config.rollback", &body).await?;
            print_write(ctx, &reply)?;
        }
        ConfigCommand::Watch { agent, environment } => {
            watch(&client, ctx, &agent, &environment).await?;
        }
        ConfigCommand::Export {
            environment,
            output,
        } => {
            let reply = call(
                &client,
                "config.export",
                &json!({"environment": environment}),
            )
            .await?;
            let text = serde_json::to_string_pretty(&reply)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text + "\n")
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "exported {} agents to {}",
                        reply["agents"].as_array().map_or(0, Vec::len),
                        path.display()
                    );
                }
                None => println!("{text}"),
            }
        }
        ConfigCommand::Import { file, dry_run } => {
            let bundle = read_json(file.as_ref())?;
            let body = json!({"bundle": bundle, "dry_run": dry_run, "actor": actor});
            let reply = call(&client, "config.import", &body).await?;
            if ctx.json() {
                print_json(&reply)?;
            } else {
                print_import(&reply);
            }
        }
        ConfigCommand::Schema(SchemaCommand::Set { agent, file }) => {
            let schema = read_json(file.as_ref())?;
            let body = json!({"agent": agent, "schema": schema, "actor": actor});
            let reply = call(&client, "config.schema.set", &body).await?;
            if ctx.json() {
                print_json(&reply)?;
            } else {
                println!("schema of {agent} is at version {}", reply["version"]);
            }
        }
        ConfigCommand::Schema(SchemaCommand::Get { agent }) => {
            let reply = call(&client, "config.schema.get", &json!({"agent": agent})).await?;
            print_json(if ctx.json() { &reply } else { &reply["schema"] })?;
        }
        ConfigCommand::Template(TemplateCommand::Set {
            name,
            file,
            description,
        }) => {
            let template = read_json(file.as_ref())?;
            let body = json!({"name": name, "template": template, "description": description, "actor": actor});
            let reply = call(&client, "config.template.set", &body).await?;
            if ctx.json() {
                print_json(&reply)?;
            } else {
                println!("template {name} stored; variables: {}", reply["variables"]);
            }
        }
        ConfigCommand::Template(TemplateCommand::Apply {
            name,
            agent,
            environment,
            vars,
            expected_version,
        }) => {
            let vars = parse_vars(&vars)?;
            let body = json!({"template": name, "agent": agent, "environment": environment,
                "vars": vars, "expected_version": expected_version, "actor": actor});
            let reply = call(&client, "config.template.apply", &body).await?;
            print_write(ctx, &reply)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who the audit trail records: `$YMERA_ACTOR`, else `cli:$USER`.
fn actor() -> String {
    std::env::var("YMERA_ACTOR")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| {
            format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            )
        })
}

/// Calls an endpoint; a 422 lists every failing path in the error.
async fn call(client: &ServiceClient, subject: &str, body: &Value) -> anyhow::Result<Value> {
    match client.request::<Value, Value>(subject, body).await {
        Ok(v) => Ok(v),
        Err(err) => {
            let mut message = err.to_string();
            if let Some(list) = err.details.get("violations").and_then(Value::as_array) {
                for v in list {
                    message.push_str(&format!(
                        "\n  {}: {}",
                        v["path"].as_str().unwrap_or(""),
                        v["message"].as_str().unwrap_or("")
                    ));
                }
            }
            Err(anyhow::anyhow!(message))
        }
    }
}

fn read_json(file: Option<&PathBuf>) -> anyhow::Result<Value> {
    let text = match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            text
        }
    };
    serde_json::from_str(&text).context("the input is not valid JSON")
}

/// JSON when it parses, else the text as a string.
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn parse_vars(vars: &[String]) -> anyhow::Result<Map<String, Value>> {
    vars.iter()
        .map(|v| {
            let (name, value) = v
                .split_once('=')
                .with_context(|| format!("--var {v:?} is not NAME=VALUE"))?;
            Ok((name.to_owned(), parse_value(value)))
        })
        .collect()
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_write(ctx: &Context, reply: &Value) -> anyhow::Result<()> {
    if ctx.json() {
        return print_json(reply);
    }
    if reply["changed"] == json!(true) {
        println!(
            "{} {}: version {} → {}",
            reply["agent"].as_str().unwrap_or(""),
            reply["environment"].as_str().unwrap_or(""),
            reply["previous_version"],
            reply["version"]
        );
        println!("{}", serde_json::to_string_pretty(&reply["patch"])?);
    } else {
        println!("no change (version {})", reply["version"]);
    }
    Ok(())
}

fn print_history(reply: &Value) {
    let mut versions = Table::new();
    versions.set_header(["version", "action", "at", "by", "deleted"]);
    for v in reply["versions"].as_array().into_iter().flatten() {
        versions.add_row([
            v["version"].to_string(),
            v["action"].as_str().unwrap_or("").to_owned(),
            v["created_at"].as_str().unwrap_or("").to_owned(),
            v["created_by"].as_str().unwrap_or("").to_owned(),
            v["deleted"].to_string(),
        ]);
    }
    println!("retained versions\n{versions}");
    let mut audit = Table::new();
    audit.set_header(["at", "action", "from", "to", "by", "change"]);
    for a in reply["audit"].as_array().into_iter().flatten() {
        let change: Vec<String> = a["patch"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|op| {
                format!(
                    "{} {}",
                    op["op"].as_str().unwrap_or(""),
                    op["path"].as_str().unwrap_or("")
                )
            })
            .collect();
        audit.add_row([
            a["at"].as_str().unwrap_or("").to_owned(),
            format!(
                "{} {}",
                a["action"].as_str().unwrap_or(""),
                a["environment"].as_str().unwrap_or("")
            ),
            a["from_version"].to_string(),
            a["to_version"].to_string(),
            a["actor"].as_str().unwrap_or("").to_owned(),
            change.join(", "),
        ]);
    }
    println!("audit trail\n{audit}");
}

fn print_import(reply: &Value) {
    let mut table = Table::new();
    table.set_header(["agent", "target", "from", "to"]);
    for c in reply["changes"].as_array().into_iter().flatten() {
        table.add_row([
            c["agent"].as_str().unwrap_or("").to_owned(),
            c["target"].as_str().unwrap_or("").to_owned(),
            c["from_version"].to_string(),
            c["to_version"].to_string(),
        ]);
    }
    println!("{table}");
    let verb = if reply["applied"] == json!(true) {
        "applied"
    } else {
        "dry run, nothing applied"
    };
    println!(
        "{} changes, {} unchanged ({verb})",
        reply["changes"].as_array().map_or(0, Vec::len),
        reply["unchanged"]
    );
}

/// Prints the effective config, then re-fetches and prints it on every
/// change event of the layer or of base.
async fn watch(
    client: &ServiceClient,
    ctx: &Context,
    agent: &str,
    environment: &str,
) -> anyhow::Result<()> {
    let nats = client.nats();
    let mut subjects = vec![format!("config.changed.{agent}.{environment}")];
    if environment != "base" {
        subjects.push(format!("config.changed.{agent}.base"));
    }
    let mut subs = Vec::new();
    for s in subjects {
        subs.push(nats.subscribe(s).await.context("cannot subscribe")?);
    }
    let mut events = futures::stream::select_all(subs);
    let fetch = json!({"agent": agent, "environment": environment});
    let show = |reply: &Value| -> anyhow::Result<()> {
        if ctx.json() {
            println!("{}", serde_json::to_string(reply)?);
        } else {
            eprintln!(
                "# {agent} {environment} version {} ({} by {})",
                reply["version"],
                reply["updated_at"].as_str().unwrap_or(""),
                reply["updated_by"].as_str().unwrap_or("")
            );
            print_json(&reply["config"])?;
        }
        Ok(())
    };
    match call(client, "config.get", &fetch).await {
        Ok(reply) => show(&reply)?,
        Err(err) => eprintln!("# {err}"),
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = events.next() => {
                if event.is_none() {
                    return Ok(());
                }
                match call(client, "config.get", &fetch).await {
                    Ok(reply) => show(&reply)?,
                    Err(err) => eprintln!("# change seen, but the fetch failed: {err}"),
                }
            }
        }
    }
}
