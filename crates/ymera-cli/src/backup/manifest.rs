//! `manifest.json`: what an archive holds, and the checks every part must pass
//! before anything is loaded from it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The archive format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside an archive.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The PostgreSQL dump's file name.
pub const POSTGRES_FILE: &str = "postgres.dump";
/// Largest manifest read (it lists parts, it holds no data).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The archive's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When `create` started (RFC 3339, UTC).
    pub created_at: String,
    /// The `ymera` version that wrote it.
    pub ymera_version: String,
    /// When each phase ran (the archive's consistency statement).
    pub timeline: Timeline,
    /// Every part, in the order it was taken.
    pub parts: Vec<Part>,
    /// Rows per table (`schema.table`) at the dump's snapshot; `verify` compares them
    /// with the dump restored into a scratch database.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, i64>,
    /// The PostgreSQL server version the dump was taken from (`server_version_num`).
    #[serde(default)]
    pub postgres_server_version: i64,
}

/// The instants of the phases of `create`: the PostgreSQL snapshot first, then every
/// stream snapshot (ARCHITECTURE.md "Backups": what an archive taken under load holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    /// The instant of the database snapshot the dump holds (`now()` of the exporting
    /// REPEATABLE READ transaction whose snapshot pg_dump imports).
    pub dump_snapshot_at: String,
    /// When pg_dump exited.
    pub dump_finished_at: String,
    /// Before the first stream snapshot was requested (after the database snapshot).
    pub streams_started_at: String,
    /// After the last stream snapshot was complete.
    pub streams_finished_at: String,
}

/// One file of the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// Path relative to the archive root.
    pub file: String,
    /// `postgres` (pg_dump custom format) or `jetstream` (a stream snapshot).
    pub kind: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// For `jetstream`: the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamPart>,
}

/// What a stream snapshot holds, as the server reported it when it took it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamPart {
    /// Stream name.
    pub name: String,
    /// Messages in the snapshot.
    pub messages: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Durable consumers in the snapshot (their configuration and ack state); ephemeral
    /// ones (key-value watchers of the backed-up processes) are not counted.
    pub consumers: u64,
    /// The stream configuration (sent back in the restore request).
    pub config: serde_json::Value,
    /// The stream state at the snapshot.
    pub state: serde_json::Value,
}

/// Hex SHA-256 and size of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl Manifest {
    /// Writes `manifest.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        std::fs::write(dir.join(MANIFEST_FILE), text)
            .with_context(|| format!("writing {}", dir.join(MANIFEST_FILE).display()))
    }

    /// Reads and checks `manifest.json` of `dir`: its format version and every part's
    /// presence, size and checksum. Nothing is loaded before this passes.
    pub fn read_checked(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("not a Ymera backup: {} is missing", path.display()))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            bail!(
                "{} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
                path.display(),
                meta.len()
            );
        }
        let text = std::fs::read(&path)?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        match value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => bail!(
                "unsupported backup format_version {v} (this ymera reads format_version {FORMAT_VERSION})"
            ),
            None => bail!("{} has no format_version", path.display()),
        }
        let manifest: Manifest = serde_json::from_value(value)
            .with_context(|| format!("{} does not match the manifest format", path.display()))?;
        if !manifest.parts.iter().any(|p| p.kind == "postgres") {
            bail!("the manifest lists no PostgreSQL dump");
        }
        for part in &manifest.parts {
            let file = part_path(dir, &part.file)?;
            if !file.is_file() {
                bail!("part {} is missing from the archive", part.file);
            }
            let (sum, size) = sha256_file(&file)?;
            if size != part.size {
                bail!(
                    "part {} is {size} bytes, the manifest says {}",
                    part.file,
                    part.size
                );
            }
            if sum != part.sha256 {
                bail!(
                    "part {} fails its checksum (sha256 {sum}, the manifest says {})",
                    part.file,
                    part.sha256
                );
            }
        }
        Ok(manifest)
    }

    /// The stream parts in the order they were taken.
    pub fn streams(&self) -> impl Iterator<Item = (&Part, &StreamPart)> {
        self.parts
            .iter()
            .filter_map(|p| p.stream.as_ref().map(|s| (p, s)))
    }

    /// The PostgreSQL part.
    pub fn postgres(&self) -> Option<&Part> {
        self.parts.iter().find(|p| p.kind == "postgres")
    }
}

/// `dir/file`, refusing paths that leave the archive.
pub fn part_path(dir: &Path, file: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(file);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("part path {file:?} leaves the archive");
    }
    Ok(dir.join(rel))
}
