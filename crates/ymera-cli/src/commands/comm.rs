//! Communication commands: `ymera send`, `status`, `history`, `listen`, `dlq`.
//!
//! They talk to the communication agent (`communication.*`) and, for
//! `listen` and `send --wait-reply`, act as an agent on `agent.<name>.inbox`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::context::Context;

/// Commands of this area (top-level: `ymera send`, `ymera status`, …).
#[derive(Debug, clap::Subcommand)]
pub enum CommCommand {
    /// Send a message to one or more agents through the communication agent.
    Send(SendArgs),
    /// Show the delivery status of a message, per recipient.
    Status(StatusArgs),
    /// List message history (newest first).
    History(HistoryArgs),
    /// Act as agent NAME: print every message delivered to it and acknowledge it.
    Listen(ListenArgs),
    /// Inspect or replay dead-lettered messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `ymera send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Recipients, comma-separated (an agent name, or `skill:<id>`).
    #[arg(long, value_delimiter = ',', required_unless_present = "skill")]
    pub to: Vec<String>,
    /// Send to one live agent holding this skill (`skill:<id>`, DESIGN §9) instead of a
    /// named recipient; the reply says which agent was chosen.
    #[arg(long)]
    pub skill: Option<String>,
    /// Subject line.
    #[arg(long, default_value = "message")]
    pub subject: String,
    /// Payload: JSON text, or @file to read it from a file.
    #[arg(long, default_value = "null", conflicts_with = "message")]
    pub payload: String,
    /// Chat text: sends the payload `{"message": MESSAGE}` (the built-in agents' chat
    /// request) and waits for the response, as `--wait-reply` does.
    pub message: Option<String>,
    /// The sending agent's name.
    #[arg(long = "from", default_value = "cli")]
    pub sender: String,
    /// Message type: request, response, event or command.
    #[arg(long = "type", default_value = "request")]
    pub message_type: String,
    /// Conversation id.
    #[arg(long)]
    pub conversation: Option<String>,
    /// Priority: low, normal, high or critical.
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// The id of the message this one answers (for responses).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Reuse this message id (a resend inside the duplicate window delivers nothing new).
    #[arg(long)]
    pub id: Option<String>,
    /// Wait for a response (an envelope to the sender with correlation_id = the id).
    #[arg(long)]
    pub wait_reply: bool,
    /// How long to wait for the response, in seconds.
    #[arg(long, default_value_t = 60)]
    pub reply_timeout: u64,
}

/// `ymera status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The message id.
    pub id: String,
}

/// `ymera history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only messages from this sender.
    #[arg(long)]
    pub sender: Option<String>,
    /// Only messages to this recipient.
    #[arg(long)]
    pub recipient: Option<String>,
    /// Only messages of this conversation.
    #[arg(long)]
    pub conversation: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Page size (≤ 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Cursor from a previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `ymera listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// The agent name to act as.
    pub name: String,
    /// Reject every message (error reply), to watch retries and the DLQ.
    #[arg(long)]
    pub fail: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `ymera dlq …`.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// Only this recipient's.
        #[arg(long)]
        recipient: Option<String>,
        /// Page size (≤ 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start at this DLQ sequence.
        #[arg(long)]
        from: Option<u64>,
    },
    /// Deliver dead letters again (attempts start over).
    Replay {
        /// DLQ sequences to replay.
        sequences: Vec<u64>,
        /// Replay every dead letter of this recipient instead.
        #[arg(long)]
        recipient: Option<String>,
        /// Most to replay with --recipient.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Runs one command.
pub async fn run(command: CommCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {
        CommCommand::Send(args) => send(args, ctx).await,
        CommCommand::Status(args) => status(args, ctx).await,
        CommCommand::History(args) => history(args, ctx).await,
        CommCommand::Listen(args) => listen(args, ctx).await,
        CommCommand::Dlq(cmd) => dlq(cmd, ctx).await,
    }
}

fn read_payload(text: &str) -> anyhow::Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => text.to_owned(),
    };
    serde_json::from_str(&text).context("--payload is not valid JSON")
}

async fn send(args: SendArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    let mut args = args;
    if let Some(skill) = &args.skill {
        args.to.push(format!("skill:{skill}"));
    }
    let payload = match &args.message {
        Some(text) => {
            args.wait_reply = true;
            json!({ "message": text })
        }
        None => read_payload(&args.payload)?,
    };
    let mut envelope = json!({
        "type": args.message_type,
        "sender": args.sender,
        "recipients": args.to,
        "subject": args.subject,
        "payload": payload,
        "priority": args.priority,
    });
    if let Some(conversation) = &args.conversation {
        envelope["conversation_id"] = json!(conversation);
    }
    if let Some(correlation) = &args.correlation_id {
        envelope["correlation_id"] = json!(correlation);
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    envelope["id"] = json!(id);
    // Subscribe before sending so a fast reply is not missed.
    let mut replies = if args.wait_reply {
        Some(
            client
                .nats()
                .subscribe(format!("agent.{}.inbox", args.sender))
                .await?,
        )
    } else {
        None
    };
    let reply: Value = client.request("communication.send", &envelope).await?;
    if ctx.json() && replies.is_none() {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if !ctx.json() {
        let stored: Vec<&str> = reply["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let routed: Vec<String> = reply["resolved"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    " ({} → {})",
                    r["recipient"].as_str().unwrap_or("?"),
                    r["agent"].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!(
            "accepted {} for {}{}",
            reply["id"].as_str().unwrap_or(&id),
            stored.join(", "),
            routed.concat()
        );
    }
    let Some(sub) = replies.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.reply_timeout);
    loop {
        let message = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("the inbox subscription ended"),
            Err(_) => bail!("no reply within {} s", args.reply_timeout),
        };
        if let Some(reply_to) = &message.reply {
            client
                .nats()
                .publish(reply_to.clone(), Bytes::from_static(b"{}"))
                .await?;
        }
        let Ok(response) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        if response["correlation_id"].as_str() == Some(id.as_str()) {
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&response)?);
            } else {
                print_payload(&response);
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print_payload(envelope: &Value) {
    let payload = &envelope["payload"];
    match payload.get("response").and_then(Value::as_str) {
        Some(text) => println!("{text}"),
        None => println!(
            "{}",
            serde_json::to_string_pretty(payload).unwrap_or_default()
        ),
    }
}

async fn status(args: StatusArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    let reply: Value = client
        .request("communication.status", &json!({"id": args.id}))
        .await?;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "message {}: {}",
        args.id,
        reply["status"].as_str().unwrap_or("?")
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "recipient",
        "state",
        "attempts",
        "first attempt",
        "last attempt",
        "last error",
    ]);
    for copy in reply["recipients"].as_array().into_iter().flatten() {
        let text = |k: &str| copy[k].as_str().unwrap_or("").to_owned();
        table.add_row([
            text("recipient"),
            text("state"),
            copy["attempts"].to_string(),
            text("first_attempt_at"),
            text("last_attempt_at"),
            text("last_error"),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn history(args: HistoryArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    let mut request = json!({"limit": args.limit});
    for (key, value) in [
        ("sender", &args.sender),
        ("recipient", &args.recipient),
        ("conversation_id", &args.conversation),
        ("since", &args.since),
        ("until", &args.until),
        ("cursor", &args.cursor),
    ] {
        if let Some(value) = value {
            request[key] = json!(value);
        }
    }
    let page: Value = client.request("communication.history", &request).await?;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "id",
        "created",
        "sender",
        "recipients",
        "subject",
        "status",
    ]);
    for m in page["messages"].as_array().into_iter().flatten() {
        let text = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        let recipients: Vec<&str> = m["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        table.add_row([
            text("id"),
            text("created_at"),
            text("sender"),
            recipients.join(","),
            text("subject"),
            text("status"),
        ]);
    }
    println!("{table}");
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("more: --cursor {cursor}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn listen(args: ListenArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if ymera_core::envelope::validate_agent_name(&args.name).is_err() {
        bail!(
            "{:?} is not an agent name ([a-z0-9][a-z0-9_-]{{0,63}})",
            args.name
        );
    }
    let nats = ctx.nats().await?;
    let subject = format!("agent.{}.inbox", args.name);
    let mut sub = nats.subscribe(subject.clone()).await?;
    eprintln!(
        "listening on {subject}{} (Ctrl-C to stop)",
        if args.fail {
            ", rejecting every message"
        } else {
            ""
        }
    );
    let mut seen = 0u64;
    loop {
        let message = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            message = sub.next() => match message { Some(m) => m, None => break },
        };
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        if ctx.json() {
            println!("{}", serde_json::to_string(&envelope)?);
        } else {
            let attempt = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Ymera-Attempts"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| "1".into());
            println!(
                "{} from {} (attempt {attempt}): {}  {}",
                envelope["id"].as_str().unwrap_or("?"),
                envelope["sender"].as_str().unwrap_or("?"),
                envelope["subject"].as_str().unwrap_or(""),
                envelope["payload"]
            );
        }
        if let Some(reply_to) = message.reply.clone() {
            if args.fail {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Service-Error", "rejected by ymera listen --fail");
                headers.insert("Nats-Service-Error-Code", "503");
                let body = Bytes::from_static(br#"{"error":{"code":"unavailable","message":"rejected by ymera listen --fail"}}"#);
                nats.publish_with_headers(reply_to, headers, body).await?;
            } else {
                nats.publish(reply_to, Bytes::from_static(b"{}")).await?;
            }
        }
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
    }
    nats.flush().await?;
    Ok(ExitCode::SUCCESS)
}

async fn dlq(cmd: DlqCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    match cmd {
        DlqCommand::List {
            recipient,
            limit,
            from,
        } => {
            let reply: Value = client
                .request(
                    "communication.dlq.list",
                    &json!({"recipient": recipient, "limit": limit, "from_sequence": from}),
                )
                .await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "seq",
                "id",
                "recipient",
                "attempts",
                "subject",
                "last error",
            ]);
            for d in reply["dead_letters"].as_array().into_iter().flatten() {
                table.add_row([
                    d["sequence"].to_string(),
                    d["envelope"]["id"].as_str().unwrap_or("").to_owned(),
                    d["recipient"].as_str().unwrap_or("").to_owned(),
                    d["attempts"].to_string(),
                    d["envelope"]["subject"].as_str().unwrap_or("").to_owned(),
                    d["last_error"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            println!("{table}");
            if let Some(next) = reply["next_sequence"].as_u64() {
                println!("more: --from {next}");
            }
        }
        DlqCommand::Replay {
            sequences,
            recipient,
            limit,
        } => {
            if sequences.is_empty() && recipient.is_none() {
                bail!("give DLQ sequences or --recipient");
            }
            let reply: Value = client
                .request(
                    "communication.dlq.replay",
                    &json!({"sequences": sequences, "recipient": recipient, "limit": limit}),
                )
                .await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!("replayed {} message(s)", reply["replayed"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
