//! Drafting commands (`ymera draft …`), clients of the drafting agent.
//!
//! - `ymera draft new "Title" [--file F|-] [--author A] [--type report] [--tag t] [--template ID --var k=v]`
//! - `ymera draft show ID`, `list [--author A] [--status S] [--tag T] [--search Q] [--all]`
//! - `ymera draft edit ID` (opens $EDITOR on the content; saving commits a revision)
//! - `ymera draft analyze FILE|-  [--tone formal] [--audience general]`
//! - `ymera draft export ID --format html [-o FILE]`
//! - `ymera draft revisions ID`, `diff ID FROM [TO] [--words]`, `restore ID REV`
//! - `ymera draft comment ID --body "…" --start 0 --end 5` | `--resolve CID` | `--reopen CID` | `--list`
//! - `ymera draft transition ID in_review [--note "…"]`

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use comfy_table::Table;
use serde_json::{Value, json};
use ymera_core::client::ServiceClient;

use crate::context::Context;

/// Commands of this area.
#[derive(Debug, clap::Subcommand)]
pub enum DraftCommand {
    /// Create a draft from a file, stdin or a template.
    New {
        /// Title.
        title: String,
        /// Markdown content file (`-`: stdin).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Author id (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Document type.
        #[arg(long = "type")]
        document_type: Option<String>,
        /// Tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Tone (formal, casual, …).
        #[arg(long)]
        tone: Option<String>,
        /// Target audience (general, technical, …).
        #[arg(long)]
        audience: Option<String>,
        /// Template to start from.
        #[arg(long)]
        template: Option<String>,
        /// Template values, `name=value` (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
    },
    /// Show a draft.
    Show {
        /// Draft id.
        id: String,
    },
    /// Edit the content in $EDITOR; saving commits a revision.
    Edit {
        /// Draft id.
        id: String,
        /// Commit message.
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// List drafts.
    List {
        /// Only this author's.
        #[arg(long)]
        author: Option<String>,
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Title contains.
        #[arg(long)]
        search: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Analyse a text file (readability and style).
    Analyze {
        /// File (`-`: stdin).
        file: PathBuf,
        /// Tone.
        #[arg(long)]
        tone: Option<String>,
        /// Audience.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Export a draft.
    Export {
        /// Draft id.
        id: String,
        /// markdown, html, json or text.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// A past revision instead of the current text.
        #[arg(long)]
        revision: Option<i32>,
        /// Output file (default: stdout).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Revision history.
    Revisions {
        /// Draft id.
        id: String,
    },
    /// Diff between two revisions (TO: current).
    Diff {
        /// Draft id.
        id: String,
        /// From revision.
        from: i32,
        /// To revision.
        to: Option<i32>,
        /// Word-level instead of lines.
        #[arg(long)]
        words: bool,
    },
    /// Restore a revision (as a new revision).
    Restore {
        /// Draft id.
        id: String,
        /// Revision to restore.
        revision: i32,
    },
    /// Comment on a range, resolve, reopen or list comments.
    Comment {
        /// Draft id.
        id: String,
        /// Comment text (adds a comment).
        #[arg(long)]
        body: Option<String>,
        /// Anchor start (characters).
        #[arg(long, default_value_t = 0)]
        start: usize,
        /// Anchor end (characters).
        #[arg(long)]
        end: Option<usize>,
        /// Resolve this comment.
        #[arg(long)]
        resolve: Option<String>,
        /// Reopen this comment.
        #[arg(long)]
        reopen: Option<String>,
        /// List comments.
        #[arg(long)]
        list: bool,
    },
    /// Move a draft through draft → in_review → approved → published → archived.
    Transition {
        /// Draft id.
        id: String,
        /// Target status.
        to: String,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
}

fn me() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn call(client: &ServiceClient, subject: &str, body: Value) -> anyhow::Result<Value> {
    client
        .request::<_, Value>(subject, &body)
        .await
        .map_err(|e| anyhow::anyhow!("{subject}: {e}"))
}

fn print(ctx: &Context, value: &Value, human: impl FnOnce(&Value)) {
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        human(value);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Runs one command.
pub async fn run(command: DraftCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    match command {
        DraftCommand::New {
            title,
            file,
            author,
            document_type,
            tags,
            tone,
            audience,
            template,
            vars,
        } => {
            let content = file.as_ref().map(read_input).transpose()?;
            let mut variables = BTreeMap::new();
            for v in vars {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--var wants name=value, not {v}"))?;
                variables.insert(k.to_owned(), val.to_owned());
            }
            let d = call(
                &client,
                "drafting.create",
                json!({"title": title, "content": content, "author_id": author.unwrap_or_else(me),
                       "document_type": document_type, "tags": tags, "tone": tone, "target_audience": audience,
                       "template_id": template, "variables": variables}),
            )
            .await?;
            print(ctx, &d, |d| {
                println!("created {} (version {})", s(&d["draft_id"]), d["version"]);
            });
        }
        DraftCommand::Show { id } => {
            let d = call(
                &client,
                "drafting.get",
                json!({"draft_id": id, "include": ["comments"]}),
            )
            .await?;
            print(ctx, &d, |d| {
                println!(
                    "{}  [{}]  v{}  by {}",
                    s(&d["title"]),
                    s(&d["status"]),
                    d["version"],
                    s(&d["author_id"])
                );
                println!("{} words, updated {}", d["word_count"], s(&d["updated_at"]));
                if let Some(e) = d["editors"].as_array().filter(|e| !e.is_empty()) {
                    let names: Vec<String> = e.iter().map(|x| s(&x["user_id"])).collect();
                    println!("editing now: {}", names.join(", "));
                }
                println!("\n{}", s(&d["content"]));
            });
        }
        DraftCommand::Edit { id, message } => {
            let d = call(&client, "drafting.get", json!({"draft_id": id})).await?;
            let dir = std::env::temp_dir().join(format!("ymera-draft-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{id}.md"));
            let original = s(&d["content"]);
            std::fs::write(&path, &original)?;
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".to_owned());
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&path)
                .status()
                .with_context(|| format!("cannot start {editor}"))?;
            let edited = std::fs::read_to_string(&path)?;
            let _ = std::fs::remove_dir_all(&dir);
            if !status.success() {
                anyhow::bail!("{editor} exited with {status}; nothing saved");
            }
            if edited == original {
                println!("no changes");
                return Ok(ExitCode::SUCCESS);
            }
            let r = call(
                &client,
                "drafting.update",
                json!({"draft_id": id, "content": edited, "expected_version": d["version"],
                       "author_id": me(), "message": message}),
            )
            .await?;
            print(ctx, &r, |r| println!("saved revision {}", r["version"]));
        }
        DraftCommand::List {
            author,
            status,
            tag,
            search,
            limit,
            all,
        } => {
            let mut cursor = Value::Null;
            let mut rows = Vec::new();
            loop {
                let page = call(
                    &client,
                    "drafting.list",
                    json!({"author_id": author, "status": status, "tag": tag, "q": search, "limit": limit, "cursor": cursor}),
                )
                .await?;
                rows.extend(page["drafts"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].clone();
                if !all || cursor.is_null() {
                    break;
                }
            }
            let value = json!({"drafts": rows, "next_cursor": cursor});
            print(ctx, &value, |_| {
                let mut table = Table::new();
                table.set_header([
                    "id", "title", "status", "version", "words", "author", "updated",
                ]);
                for d in &rows {
                    table.add_row([
                        s(&d["draft_id"]),
                        s(&d["title"]),
                        s(&d["status"]),
                        s(&d["version"]),
                        s(&d["word_count"]),
                        s(&d["author_id"]),
                        s(&d["updated_at"]),
                    ]);
                }
                println!("{table}");
                if !cursor.is_null() {
                    println!("more: --all");
                }
            });
        }
        DraftCommand::Analyze {
            file,
            tone,
            audience,
        } => {
            let text = read_input(&file)?;
            let a = call(
                &client,
                "drafting.analyze",
                json!({"text": text, "tone": tone, "target_audience": audience}),
            )
            .await?;
            print(ctx, &a, |a| {
                println!(
                    "{} words, {} sentences, {} paragraphs, reading time {:.0} s",
                    a["words"],
                    a["sentences"],
                    a["paragraphs"],
                    a["reading_time_seconds"].as_f64().unwrap_or(0.0)
                );
                let mut table = Table::new();
                table.set_header(["score", "value"]);
                if let Some(r) = a["readability"].as_object() {
                    for (k, v) in r {
                        table.add_row([k.clone(), format!("{:.2}", v.as_f64().unwrap_or(0.0))]);
                    }
                }
                println!("{table}");
                let mut table = Table::new();
                table.set_header(["line:col", "rule", "text", "message", "suggestion"]);
                for f in a["findings"].as_array().into_iter().flatten() {
                    table.add_row([
                        format!("{}:{}", f["line"], f["column"]),
                        s(&f["rule_id"]),
                        s(&f["text"]),
                        s(&f["message"]),
                        s(&f["suggestion"]),
                    ]);
                }
                println!("{table}");
                for sug in a["suggestions"].as_array().into_iter().flatten() {
                    println!("- {}", s(sug));
                }
            });
        }
        DraftCommand::Export {
            id,
            format,
            revision,
            output,
        } => {
            let e = call(
                &client,
                "drafting.export",
                json!({"draft_id": id, "format": format, "revision": revision}),
            )
            .await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, s(&e["content"]))?;
                    println!("wrote {}", path.display());
                }
                None => print!("{}", s(&e["content"])),
            }
        }
        DraftCommand::Revisions { id } => {
            let r = call(&client, "drafting.revisions", json!({"draft_id": id})).await?;
            print(ctx, &r, |r| {
                let mut table = Table::new();
                table.set_header([
                    "rev", "when", "author", "source", "words", "delta", "message",
                ]);
                for rev in r["revisions"].as_array().into_iter().flatten() {
                    table.add_row([
                        s(&rev["revision"]),
                        s(&rev["created_at"]),
                        s(&rev["author_id"]),
                        s(&rev["source"]),
                        s(&rev["word_count"]),
                        format!("{:+}", rev["word_delta"].as_i64().unwrap_or(0)),
                        s(&rev["message"]),
                    ]);
                }
                println!("{table}");
            });
        }
        DraftCommand::Diff {
            id,
            from,
            to,
            words,
        } => {
            let d = call(
                &client,
                "drafting.diff",
                json!({"draft_id": id, "from": from, "to": to, "level": if words { "word" } else { "line" }}),
            )
            .await?;
            print(ctx, &d, |d| {
                if words {
                    for c in d["changes"].as_array().into_iter().flatten() {
                        match c["op"].as_str() {
                            Some("insert") => print!("{{+{}+}}", s(&c["text"])),
                            Some("delete") => print!("[-{}-]", s(&c["text"])),
                            _ => print!("{}", s(&c["text"])),
                        }
                    }
                    println!();
                } else {
                    print!("{}", s(&d["unified"]));
                }
            });
        }
        DraftCommand::Restore { id, revision } => {
            let r = call(
                &client,
                "drafting.restore",
                json!({"draft_id": id, "revision": revision, "author_id": me()}),
            )
            .await?;
            print(ctx, &r, |r| {
                println!("restored revision {revision} as version {}", r["version"])
            });
        }
        DraftCommand::Comment {
            id,
            body,
            start,
            end,
            resolve,
            reopen,
            list,
        } => {
            let request = if let Some(cid) = resolve {
                json!({"draft_id": id, "action": "resolve", "comment_id": cid, "author_id": me()})
            } else if let Some(cid) = reopen {
                json!({"draft_id": id, "action": "reopen", "comment_id": cid, "author_id": me()})
            } else if list || body.is_none() {
                json!({"draft_id": id, "action": "list"})
            } else {
                json!({"draft_id": id, "action": "add", "body": body, "start": start, "end": end.unwrap_or(start), "author_id": me()})
            };
            let r = call(&client, "drafting.comment", request).await?;
            print(ctx, &r, |r| {
                if let Some(list) = r["comments"].as_array() {
                    let mut table = Table::new();
                    table.set_header(["id", "status", "author", "range", "text", "comment"]);
                    for c in list {
                        table.add_row([
                            s(&c["comment_id"]),
                            s(&c["status"]),
                            s(&c["author_id"]),
                            format!("{}..{}", c["anchor_start"], c["anchor_end"]),
                            s(&c["anchored_text"]),
                            s(&c["body"]),
                        ]);
                    }
                    println!("{table}");
                } else {
                    println!("comment {} is {}", s(&r["comment_id"]), s(&r["status"]));
                }
            });
        }
        DraftCommand::Transition { id, to, note } => {
            let r = call(
                &client,
                "drafting.transition",
                json!({"draft_id": id, "to": to, "note": note, "actor": me()}),
            )
            .await?;
            print(ctx, &r, |r| {
                println!("{} is now {}", s(&r["draft_id"]), s(&r["status"]))
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
