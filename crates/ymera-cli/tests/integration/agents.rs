//! Agent cards and skill routing (DESIGN §9) from the CLI, as a user drives them: a stack
//! started with `ymera up --detach --auth` (security, communication, code-analysis,
//! drafting), then `ymera agents` (table and `--json`) and `ymera send --skill …` with
//! the seed's code-review request, a writing question for drafting, and a skill nobody
//! has.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::stack::{LiveStack, wait_for};

const SERVICES: [&str; 4] = ["security", "communication", "code-analysis", "drafting"];

/// The seed's code-review request: a question with a fenced Python block holding a
/// shell-injection call (B602) and `eval(input())` (B307).
const CODE_REVIEW: &str = "any security bugs here?\n```python\nimport subprocess\n\ndef deploy(branch):\n    subprocess.call('git checkout ' + branch, shell=True)\n    return eval(input('next step: '))\n```";

/// A question for the writing-analysis skill (drafting's inbox answers readability and style).
const WRITING: &str = "How readable is this paragraph? The committee, having deliberated at \
considerable length upon the multifarious considerations pertaining to the proposal, \
ultimately determined that further consultation was necessitated.";

fn live_stack() -> LiveStack {
    let stack = LiveStack::up(&SERVICES, &["--auth"]);
    stack.wait_healthy();
    stack
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ymera …` that must succeed; its stdout.
fn ok(stack: &LiveStack, args: &[&str]) -> String {
    let out = stack.ymera(args);
    assert!(
        out.status.success(),
        "ymera {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        stack.logs()
    );
    text(&out.stdout)
}

fn json(stack: &LiveStack, args: &[&str]) -> Value {
    let stdout = ok(stack, &[&["--json"], args].concat());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}"))
}

/// The card of `name` in an `agents.list` reply.
fn card<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["agents"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
}

fn skills(card: &Value) -> Vec<String> {
    card["skills"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// `ymera agents --json` once both built-in agents have registered their cards.
fn both_cards(stack: &LiveStack) -> Value {
    wait_for(
        "the cards of code-analysis and drafting",
        Duration::from_secs(60),
        || {
            let list = json(stack, &["agents"]);
            (card(&list, "code-analysis").is_some() && card(&list, "drafting").is_some())
                .then_some(list)
        },
    )
}

fn counter(card: &Value, group: &str, key: &str) -> u64 {
    card[group][key].as_u64().unwrap_or(0)
}

fn assert_failed_with(out: &Output, parts: &[&str]) {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    for part in parts {
        assert!(stderr.contains(part), "{part:?} in stderr:\n{stderr}");
    }
}

#[test]
fn send_by_skill_answers_the_seeds_code_review_and_refuses_a_skill_nobody_has() {
    let stack = live_stack();
    both_cards(&stack);

    // The user's chat: no named recipient, the answer printed on stdout.
    let stdout = ok(&stack, &["send", "--skill", "code_review", CODE_REVIEW]);
    let mut lines = stdout.lines();
    let accepted = lines.next().unwrap_or_default();
    assert!(
        accepted.starts_with("accepted ")
            && accepted.ends_with("for code-analysis (skill:code_review → code-analysis)"),
        "{stdout}"
    );
    for finding in ["B602", "B307"] {
        assert!(stdout.contains(finding), "{finding} in:\n{stdout}");
    }
    let id = accepted.split_whitespace().nth(1).unwrap().to_owned();

    // `--json`: the response envelope, from code-analysis, answering that message.
    let response = json(&stack, &["send", "--skill", "code_review", CODE_REVIEW]);
    assert_eq!(response["type"], "response", "{response}");
    assert_eq!(response["sender"], "code-analysis", "{response}");
    assert_eq!(response["payload"]["success"], true, "{response}");
    assert!(
        response["payload"]["response"]
            .as_str()
            .unwrap_or_default()
            .contains("B602"),
        "{response}"
    );

    // The history records the resolved agent, not `skill:code_review`.
    let history = json(
        &stack,
        &["history", "--sender", "cli", "--recipient", "code-analysis"],
    );
    let first = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {history}"));
    assert_eq!(
        first["recipients"],
        serde_json::json!(["code-analysis"]),
        "{first}"
    );

    // A skill nobody has: non-zero, the no-capable-agent error with the live agents.
    let refused = stack.ymera(&["send", "--skill", "translation", "hola"]);
    assert_failed_with(
        &refused,
        &[
            "422",
            "no capable agent found",
            "\"translation\"",
            "code-analysis",
            "drafting",
        ],
    );
    // Without a chat message (`--payload`) it is refused the same way.
    let refused = stack.ymera(&[
        "send",
        "--skill",
        "translation",
        "--payload",
        r#"{"message": "hola"}"#,
    ]);
    assert_failed_with(&refused, &["422", "no capable agent found"]);
    // A malformed skill id is refused as such, not as "no capable agent".
    let malformed = stack.ymera(&["send", "--skill", "Not A Skill!", "hola"]);
    assert_failed_with(&malformed, &["422", "/recipients/0"]);
}

#[test]
fn agents_lists_both_built_in_cards_and_counts_the_traffic_sent_by_skill() {
    let stack = live_stack();
    let before = both_cards(&stack);
    let analysis = card(&before, "code-analysis").unwrap();
    let drafting = card(&before, "drafting").unwrap();
    assert_eq!(
        skills(analysis),
        ["code_review", "code_analysis"],
        "{analysis}"
    );
    assert_eq!(
        skills(drafting),
        ["writing_analysis", "drafting"],
        "{drafting}"
    );
    for agent in [analysis, drafting] {
        assert_eq!(agent["status"], "live", "{agent}");
        assert_eq!(agent["live"], true, "{agent}");
        assert!(agent["delivery"]["delivered"].is_u64(), "{agent}");
        assert!(agent["last_heartbeat_at"].is_string(), "{agent}");
    }

    // The table: both agents with their skills, live.
    let table = ok(&stack, &["agents"]);
    for part in ["agent", "skills", "handled", "state"] {
        assert!(table.contains(part), "{part} in:\n{table}");
    }
    let row = |table: &str, name: &str| {
        table
            .lines()
            .find(|l| l.split('┆').next().is_some_and(|c| c.contains(name)))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
            .to_owned()
    };
    let analysis_row = row(&table, "code-analysis");
    assert!(
        analysis_row.contains("code_review, code_analysis") && analysis_row.contains("live"),
        "{table}"
    );
    let drafting_row = row(&table, "drafting");
    assert!(
        drafting_row.contains("writing_analysis, drafting") && drafting_row.contains("live"),
        "{table}"
    );

    // `--skill` filters; `ymera agents NAME` shows one card in full.
    let writers = json(&stack, &["agents", "--skill", "writing_analysis"]);
    let names: Vec<&str> = writers["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["drafting"], "{writers}");
    let full = json(&stack, &["agents", "drafting"]);
    assert_eq!(full["name"], "drafting", "{full}");
    assert!(full["description"].as_str().is_some(), "{full}");

    // A message to one of drafting's skills is answered by drafting.
    let stdout = ok(&stack, &["send", "--skill", "writing_analysis", WRITING]);
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("(skill:writing_analysis → drafting)")),
        "{stdout}"
    );
    assert!(stdout.contains("## Writing analysis"), "{stdout}");
    assert!(stdout.contains("Flesch reading ease"), "{stdout}");
    let response = json(&stack, &["send", "--skill", "writing_analysis", WRITING]);
    assert_eq!(response["sender"], "drafting", "{response}");
    assert_eq!(response["payload"]["success"], true, "{response}");
    assert_eq!(response["payload"]["agent"], "drafting", "{response}");
    // And code-analysis gets the code review.
    let stdout = ok(&stack, &["send", "--skill", "code_review", CODE_REVIEW]);
    assert!(stdout.contains("B602"), "{stdout}");

    // After the traffic: each card's deliveries and the agent's own reported metrics
    // (the next heartbeat, every 10 s) have gone up.
    let after = wait_for(
        "the cards to count the traffic",
        Duration::from_secs(45),
        || {
            let list = json(&stack, &["agents"]);
            let grown = |name: &str, n: u64| {
                let (was, now) = (card(&before, name).unwrap(), card(&list, name).unwrap());
                counter(now, "delivery", "delivered") >= counter(was, "delivery", "delivered") + n
                    && counter(now, "metrics", "requests_handled")
                        >= counter(was, "metrics", "requests_handled") + n
            };
            (grown("drafting", 2) && grown("code-analysis", 1)).then_some(list)
        },
    );
    for name in ["drafting", "code-analysis"] {
        let agent = card(&after, name).unwrap();
        assert_eq!(agent["live"], true, "{agent}");
        assert_eq!(counter(agent, "metrics", "errors"), 0, "{agent}");
        assert!(
            agent["metrics"]["state"] == "idle" || agent["metrics"]["state"] == "processing",
            "{agent}"
        );
        assert!(agent["delivery"]["mean_latency_ms"].is_number(), "{agent}");
    }
    // The table shows the counts: drafting handled 2 requests (it had none before).
    assert_eq!(
        counter(
            card(&before, "drafting").unwrap(),
            "metrics",
            "requests_handled"
        ),
        0
    );
    let handled = counter(
        card(&after, "drafting").unwrap(),
        "metrics",
        "requests_handled",
    );
    let table = ok(&stack, &["agents"]);
    let cells: Vec<String> = row(&table, "drafting")
        .split('┆')
        .map(|c| {
            c.trim_matches(|ch: char| ch.is_whitespace() || ch == '│')
                .to_owned()
        })
        .collect();
    // Columns: agent, skills, status, last heartbeat, backlog, delivered, failed, dead,
    // latency ms, handled, avg ms, errors, state.
    assert_eq!(cells.len(), 13, "{table}");
    assert!(
        cells[5].parse::<u64>().is_ok_and(|n| n >= 2),
        "delivered in:\n{table}"
    );
    assert!(
        cells[9].parse::<u64>().is_ok_and(|n| n >= handled),
        "handled in:\n{table}"
    );
}
