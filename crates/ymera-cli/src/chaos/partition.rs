//! The partition fault: one nats-server cut off from the other two by firewall rules.
//!
//! The rules never touch the host. `ymera chaos` runs itself again inside a network
//! namespace of its own (`unshare --net`: a private loopback and nothing else), brings that
//! loopback up, and starts the whole stack there. Every nats-server node runs with its own
//! group (`NatsClusterOptions::node_group_base`), so an nftables rule can tell the node's
//! sockets from the others' on the shared loopback. To cut node k off, one table in the
//! namespace's `output` hook (every packet on a loopback passes it) drops, on `lo` to
//! 127.0.0.0/8 only:
//!
//! - every packet to or from k's route port (the routes the other nodes opened to k);
//! - every packet k's own sockets send to another node's route port (the routes k opened),
//!   and marks those connections so the packets coming back on them are dropped too.
//!
//! Client connections stay up on both sides: a client of k still reaches k, as in a real
//! partition between servers. Healing deletes the table. The namespace, and with it every
//! rule, goes away when the suite's process ends, however it ends.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;

/// Set in the environment of the run inside the suite's own network namespace, to the
/// network namespace of the run that made it (`net:[…]`): the inner run checks it is in
/// another one before it writes any rule.
pub const NETNS_ENV: &str = "YMERA_CHAOS_NETNS";
/// Node i of the cluster runs with group `NODE_GROUP_BASE + i`.
pub const NODE_GROUP_BASE: u32 = 61_000;
/// The nftables table holding the partition (inside the namespace).
const TABLE: &str = "ymera_chaos";
/// The conntrack mark of the connections the partitioned node opened.
const MARK: u32 = 0x5943;

/// Where this run of `ymera chaos` stands.
pub enum Entry {
    /// This process ran the suite again inside a new network namespace; that run ended so.
    Reexecuted(ExitCode),
    /// This is the run inside the suite's own namespace: the partition fault is on.
    Inside,
    /// The partition fault is skipped, for this reason; the other faults run on the host's
    /// loopback.
    Without(String),
}

/// Decides where the suite runs (see [`Entry`]); re-runs it inside `unshare --net` when it
/// can.
pub async fn enter(no_partition: bool) -> anyhow::Result<Entry> {
    if std::env::var_os(NETNS_ENV).is_some() {
        anyhow::ensure!(
            in_private_netns()?,
            "{NETNS_ENV} is set but names this process's own network namespace: \
             refusing to write firewall rules there"
        );
        run_checked("ip", &["link", "set", "lo", "up"])?;
        return Ok(Entry::Inside);
    }
    if no_partition {
        return Ok(Entry::Without("--no-partition".to_owned()));
    }
    if !is_root() {
        return Ok(Entry::Without(
            "needs root (unshare --net, one group per nats-server)".to_owned(),
        ));
    }
    for tool in ["unshare", "nft", "ip"] {
        if !on_path(tool) {
            return Ok(Entry::Without(format!(
                "{tool} not found (scripts/setup.d/chaos-netns.sh installs it)"
            )));
        }
    }
    let exe = std::env::current_exe().context("locating the ymera binary")?;
    let host_netns = own_netns()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    println!("chaos: running inside a network namespace of its own (unshare --net)");
    let status = tokio::task::spawn_blocking(move || {
        Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(exe)
            .args(args)
            .env(NETNS_ENV, host_netns)
            .status()
    })
    .await?
    .context("running unshare --net")?;
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
    Ok(Entry::Reexecuted(ExitCode::from(code)))
}

/// Cuts the node whose route port is `route` and whose group is `group` off from the
/// nodes whose route ports are `others`.
pub fn cut(route: u16, group: u32, others: &[u16]) -> anyhow::Result<()> {
    anyhow::ensure!(
        in_private_netns()?,
        "not inside the suite's own network namespace: no firewall rule written"
    );
    anyhow::ensure!(!others.is_empty(), "no other node to cut the node off from");
    let others = others
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let lo = "oifname \"lo\" ip daddr 127.0.0.0/8";
    let rules = format!(
        "table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
         {lo} tcp dport {route} drop\n    \
         {lo} tcp sport {route} drop\n    \
         {lo} meta skgid {group} tcp dport {{ {others} }} ct mark set {MARK} drop\n    \
         {lo} ct mark {MARK} drop\n  }}\n}}\n"
    );
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(rules.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Removes the partition.
pub fn heal() -> anyhow::Result<()> {
    anyhow::ensure!(
        in_private_netns()?,
        "not inside the suite's own network namespace"
    );
    run_checked("nft", &["delete", "table", "inet", TABLE])
}

/// True when this process runs in a network namespace other than the one named by
/// [`NETNS_ENV`] (the one of the run that called `unshare --net`).
fn in_private_netns() -> anyhow::Result<bool> {
    let Some(outer) = std::env::var_os(NETNS_ENV) else {
        return Ok(false);
    };
    Ok(!outer.is_empty() && own_netns()? != outer)
}

/// This process's network namespace, as `/proc/self/ns/net` names it (`net:[4026531840]`).
fn own_netns() -> anyhow::Result<OsString> {
    Ok(std::fs::read_link("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .into_os_string())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn run_checked(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
