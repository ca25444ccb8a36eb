//! `ymera agents`: the live agent cards (`communication.agents.list`, DESIGN §9) as a
//! table — skills, liveness, backlog, deliveries and the agents' own metrics — or, with
//! `--json`, the reply as it is. `ymera agents NAME` shows one card in full.

use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use crate::context::Context;

/// `ymera agents`.
#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Show this agent's card in full (`communication.agents.get`).
    pub name: Option<String>,
    /// Only agents holding this skill.
    #[arg(long)]
    pub skill: Option<String>,
}

/// Runs `ymera agents`.
pub async fn run(args: AgentsArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    if let Some(name) = &args.name {
        let card: Value = client
            .request("communication.agents.get", &json!({ "name": name }))
            .await?;
        println!("{}", serde_json::to_string_pretty(&card)?);
        return Ok(ExitCode::SUCCESS);
    }
    let request = match &args.skill {
        Some(skill) => json!({ "skill": skill }),
        None => json!({}),
    };
    let reply: Value = client
        .request("communication.agents.list", &request)
        .await?;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", table(&reply));
    Ok(ExitCode::SUCCESS)
}

fn table(reply: &Value) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "agent",
        "skills",
        "status",
        "last heartbeat",
        "backlog",
        "delivered",
        "failed",
        "dead",
        "latency ms",
        "handled",
        "avg ms",
        "errors",
        "state",
    ]);
    for agent in reply["agents"].as_array().into_iter().flatten() {
        let skills: Vec<&str> = agent["skills"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str())
            .collect();
        let number = |v: &Value| match v.as_f64() {
            Some(n) if v.is_f64() => format!("{n:.1}"),
            Some(_) => v.to_string(),
            None => "-".to_owned(),
        };
        let delivery = &agent["delivery"];
        let metrics = &agent["metrics"];
        let status = match agent["breaker"].as_str() {
            Some("closed") | None => agent["status"].as_str().unwrap_or("?").to_owned(),
            Some(breaker) => format!(
                "{} (circuit {breaker})",
                agent["status"].as_str().unwrap_or("?")
            ),
        };
        table.add_row([
            agent["name"].as_str().unwrap_or("?").to_owned(),
            skills.join(", "),
            status,
            agent["last_heartbeat_at"]
                .as_str()
                .map(|t| t.chars().take(19).collect::<String>().replace('T', " "))
                .unwrap_or_default(),
            number(&agent["backlog"]),
            number(&delivery["delivered"]),
            number(&delivery["failed"]),
            number(&delivery["dead_lettered"]),
            number(&delivery["mean_latency_ms"]),
            number(&metrics["requests_handled"]),
            number(&metrics["avg_processing_time_ms"]),
            number(&metrics["errors"]),
            metrics["state"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_cards_stats_and_reported_metrics() {
        let reply = json!({"agents": [{
            "name": "code-analysis", "skills": [{"id": "code_review"}, {"id": "code_analysis"}],
            "status": "live", "breaker": "closed", "last_heartbeat_at": "2026-12-03T14:00:00.123Z",
            "backlog": 2, "delivery": {"delivered": 10, "failed": 1, "dead_lettered": 0, "mean_latency_ms": 3.25},
            "metrics": {"requests_handled": 9, "avg_processing_time_ms": 12.5, "errors": 0, "state": "idle"}
        }]});
        let text = table(&reply).to_string();
        for part in [
            "code-analysis",
            "code_review, code_analysis",
            "live",
            "2026-12-03 14:00:00",
            "3.2",
            "12.5",
            "idle",
        ] {
            assert!(text.contains(part), "{part} in\n{text}");
        }
    }
}
