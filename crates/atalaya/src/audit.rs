//! `atalaya audit verify|export`: checks the audit log's chain in the database (or in an
//! exported file) and writes it out as JSON lines. Works on the database directly, with the
//! server's hashing secret (`ATALAYA_HASH_KEY` or `<data-dir>/hash.key`), which keys the chain.

use std::io::{BufRead as _, Write as _};

use anyhow::Context as _;
use atalaya_gateway::{Actor, Auditor, audit_link};
use atalaya_security::audit::{ChainKey, Verifier};
use atalaya_store::{AuditRow, Store};

use crate::cli::{AuditAction, AuditArgs};
use crate::config::{self, Env};

const PAGE: i64 = 10_000;

/// The chain key from the server's hashing secret.
pub fn chain_key(env: &Env, data_dir: &std::path::Path) -> anyhow::Result<ChainKey> {
    let secret = crate::serve::secret(
        env,
        "ATALAYA_HASH_KEY",
        &data_dir.join("hash.key"),
        "Key-hashing secret",
    )?;
    Ok(ChainKey::new(&secret))
}

/// An auditor for a CLI command that changes something (`atalaya secrets`).
pub fn cli_auditor(
    env: &Env,
    data_dir: &std::path::Path,
    store: &Store,
) -> anyhow::Result<(Auditor, Actor)> {
    let user = env
        .get("USER")
        .cloned()
        .unwrap_or_else(|| "unknown".to_owned());
    Ok((
        Auditor::new(store.clone(), chain_key(env, data_dir)?),
        Actor {
            name: format!("cli:{user}"),
            source_ip: "local".to_owned(),
        },
    ))
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let (env, settings) =
        config::load_local(args.local.config.clone(), args.local.data_dir.clone())?;
    let key = chain_key(&env, &settings.data_dir)?;
    match args.action {
        AuditAction::Verify { file: Some(file) } => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let mut verifier = Verifier::new(&key);
            for (number, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", file.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let row = row_from_json(&line).with_context(|| {
                    format!(
                        "{} line {}: not an exported entry",
                        file.display(),
                        number + 1
                    )
                })?;
                verifier.push(&audit_link(&row))?;
            }
            report(verifier);
        }
        AuditAction::Verify { file: None } => {
            let store = open(&settings).await?;
            let mut verifier = Verifier::new(&key);
            let mut after = 0;
            loop {
                let page = store.audit_after(after, PAGE).await?;
                for row in &page {
                    verifier.push(&audit_link(row))?;
                }
                match page.last() {
                    Some(last) if page.len() as i64 == PAGE => after = last.seq,
                    _ => break,
                }
            }
            report(verifier);
        }
        AuditAction::Export { output } => {
            let store = open(&settings).await?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after = 0;
            let mut count = 0;
            loop {
                let page = store.audit_after(after, PAGE).await?;
                for row in &page {
                    serde_json::to_writer(&mut out, row)?;
                    out.write_all(b"\n")?;
                    count += 1;
                }
                match page.last() {
                    Some(last) if page.len() as i64 == PAGE => after = last.seq,
                    _ => break,
                }
            }
            out.flush()?;
            eprintln!("Exported {count} audit entries.");
        }
    }
    Ok(())
}

async fn open(settings: &config::Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database_url)
        .await
        .context("opening storage")
}

fn report(verifier: Verifier<'_>) {
    let verified = verifier.finish();
    let head: String = verified.head.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "audit log intact: {} entries, head {head} (keep the head elsewhere to detect a truncated tail later)",
        verified.entries
    );
}

fn row_from_json(line: &str) -> anyhow::Result<AuditRow> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let text = |name: &str| -> anyhow::Result<String> {
        Ok(value[name]
            .as_str()
            .with_context(|| format!("`{name}` is missing"))?
            .to_owned())
    };
    let number = |name: &str| -> anyhow::Result<i64> {
        value[name]
            .as_i64()
            .with_context(|| format!("`{name}` is missing"))
    };
    let bytes = |name: &str| -> anyhow::Result<Vec<u8>> {
        let hex = text(name)?;
        anyhow::ensure!(hex.len() % 2 == 0, "`{name}` is not hex");
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16)
                    .with_context(|| format!("`{name}` is not hex"))
            })
            .collect()
    };
    Ok(AuditRow {
        seq: number("seq")?,
        at_ms: number("at_ms")?,
        actor: text("actor")?,
        action: text("action")?,
        target: text("target")?,
        source_ip: text("source_ip")?,
        detail: text("detail")?,
        prev_hash: bytes("prev_hash")?,
        hash: bytes("hash")?,
    })
}
