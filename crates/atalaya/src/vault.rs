//! The vault as the binary uses it: the master key (`ATALAYA_MASTER_KEY` or
//! `<data-dir>/master.key`, generated 0600 on first use), opening every secret at start,
//! `vault:NAME` references in provider credentials, and `atalaya secrets`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use atalaya_gateway::GatewayConfig;
use atalaya_security::vault::{self, MasterKey, Sealed};
use atalaya_store::{SecretRow, Store};
use secrecy::{ExposeSecret as _, SecretString};

use crate::cli::{SecretsAction, SecretsArgs};
use crate::config::{self, Env};

/// The prefix that makes a credential a reference to a vault secret.
pub const REFERENCE: &str = "vault:";
const MASTER_KEY_VAR: &str = "ATALAYA_MASTER_KEY";
const NEW_MASTER_KEY_VAR: &str = "ATALAYA_NEW_MASTER_KEY";

fn master_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

fn pending_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key.new")
}

/// The master key: from the environment, else the key file (created on first use).
pub fn master_key(env: &Env, data_dir: &Path) -> anyhow::Result<MasterKey> {
    let secret = crate::serve::secret(
        env,
        MASTER_KEY_VAR,
        &master_key_file(data_dir),
        "Master key",
    )?;
    Ok(MasterKey::from_secret(&secret)?)
}

fn sealed(row: &SecretRow) -> Sealed {
    Sealed {
        ciphertext: row.ciphertext.clone(),
        nonce: row.nonce.clone(),
        wrapped_key: row.wrapped_key.clone(),
        key_nonce: row.key_nonce.clone(),
        master_key_id: row.master_key_id.clone(),
    }
}

fn row(name: &str, sealed: Sealed) -> SecretRow {
    SecretRow {
        name: name.to_owned(),
        ciphertext: sealed.ciphertext,
        nonce: sealed.nonce,
        wrapped_key: sealed.wrapped_key,
        key_nonce: sealed.key_nonce,
        master_key_id: sealed.master_key_id,
    }
}

/// Every secret, decrypted; fails clearly when the master key is not the vault's.
pub async fn open_all(
    store: &Store,
    master: &MasterKey,
    data_dir: &Path,
) -> anyhow::Result<Vec<(String, SecretString)>> {
    let mut opened = Vec::new();
    for row in store.secret_rows().await.context("reading the vault")? {
        match vault::open(master, &row.name, &sealed(&row)) {
            Ok(value) => opened.push((row.name, value)),
            Err(error @ vault::VaultError::WrongMasterKey { .. }) => {
                let hint = if pending_key_file(data_dir).exists() {
                    " A master-key rotation was interrupted: run `atalaya secrets rotate-master-key` to finish it."
                } else {
                    " Set ATALAYA_MASTER_KEY (or <data-dir>/master.key) to the key the vault was sealed with."
                };
                anyhow::bail!("{error}.{hint}");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(opened)
}

/// Replaces `vault:NAME` provider credentials by the secrets they name.
pub fn resolve_references(
    gateway: &mut GatewayConfig,
    secrets: &[(String, SecretString)],
) -> anyhow::Result<()> {
    let lookup = |value: &SecretString, provider: &str| -> anyhow::Result<Option<SecretString>> {
        let Some(name) = value.expose_secret().strip_prefix(REFERENCE) else {
            return Ok(None);
        };
        let name = name.trim();
        secrets
            .iter()
            .find(|(stored, _)| stored == name)
            .map(|(_, secret)| Some(secret.clone()))
            .with_context(|| {
                format!(
                    "provider `{provider}` uses `{REFERENCE}{name}`, but the vault has no secret `{name}` (atalaya secrets set {name})"
                )
            })
    };
    for provider in &mut gateway.providers {
        for key in &mut provider.api_keys {
            if let Some(secret) = lookup(key, &provider.name)? {
                *key = secret;
            }
        }
        if let Some(aws) = &mut provider.aws {
            if let Some(secret) = lookup(&aws.secret_access_key, &provider.name)? {
                aws.secret_access_key = secret;
            }
            if let Some(token) = &aws.session_token
                && let Some(secret) = lookup(token, &provider.name)?
            {
                aws.session_token = Some(secret);
            }
        }
    }
    Ok(())
}

/// `atalaya secrets ...`: works on the database directly, with the master key.
pub async fn run(args: SecretsArgs) -> anyhow::Result<()> {
    let (env, settings) =
        config::load_local(args.local.config.clone(), args.local.data_dir.clone())?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let store = Store::connect(&settings.database_url)
        .await
        .context("opening storage")?;
    let data_dir = settings.data_dir.as_path();
    match args.action {
        SecretsAction::Set { name, value } => {
            check_name(&name)?;
            let value = match value {
                Some(value) => value,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the secret from standard input")?;
                    text.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            anyhow::ensure!(!value.is_empty(), "the secret `{name}` is empty");
            let master = master_key(&env, data_dir)?;
            // Refuse to add a row under a key the rest of the vault was not sealed with.
            open_all(&store, &master, data_dir).await?;
            store
                .put_secret(&row(&name, vault::seal(&master, &name, &value)))
                .await?;
            let (auditor, actor) = crate::audit::cli_auditor(&env, data_dir, &store)?;
            auditor
                .record(
                    &actor,
                    "secret.set",
                    &name,
                    serde_json::json!({"master_key": master.id()}),
                )
                .await;
            eprintln!(
                "Stored secret `{name}` (sealed under master key {}).",
                master.id()
            );
        }
        SecretsAction::List { json } => {
            let secrets = store.list_secrets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&secrets)?);
            } else {
                println!("{:<32} {:<18} UPDATED", "NAME", "MASTER KEY");
                for secret in secrets {
                    println!(
                        "{:<32} {:<18} {}",
                        secret.name, secret.master_key_id, secret.updated_at_ms
                    );
                }
            }
        }
        SecretsAction::Delete { name } => {
            anyhow::ensure!(
                store.delete_secret(&name).await?,
                "the vault has no secret `{name}`"
            );
            let (auditor, actor) = crate::audit::cli_auditor(&env, data_dir, &store)?;
            auditor
                .record(&actor, "secret.delete", &name, serde_json::json!({}))
                .await;
            eprintln!("Deleted secret `{name}`.");
        }
        SecretsAction::RotateMasterKey => rotate(&env, &store, data_dir).await?,
    }
    store.close().await;
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')),
        "a secret name is 1 to 128 letters, digits, `-`, `_`, `.` or `/`"
    );
    Ok(())
}

/// Re-wraps every data key under a new master key in one transaction. With a key file, the
/// new key is written to `master.key.new` first and renamed over `master.key` after the
/// commit, so an interrupted rotation is finished by running it again.
async fn rotate(env: &Env, store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    let from_env = env
        .get(MASTER_KEY_VAR)
        .is_some_and(|v| !v.trim().is_empty());
    let old = master_key(env, data_dir)?;
    let pending = pending_key_file(data_dir);
    let new_secret = if from_env {
        let value = env
            .get(NEW_MASTER_KEY_VAR)
            .filter(|v| !v.trim().is_empty())
            .with_context(|| {
                format!("the master key comes from {MASTER_KEY_VAR}: put the new one in {NEW_MASTER_KEY_VAR}")
            })?;
        SecretString::from(value.trim().to_owned())
    } else {
        // Reused if a previous rotation was interrupted, else generated now (mode 0600).
        atalaya_security::load_or_create_secret_file(&pending)?.0
    };
    let new = MasterKey::from_secret(&new_secret)?;
    anyhow::ensure!(
        new.id() != old.id(),
        "the new master key is the current one"
    );
    let mut moved = Vec::new();
    let mut already = 0;
    for stored in store.secret_rows().await? {
        if stored.master_key_id == new.id() {
            already += 1;
            continue;
        }
        let resealed = vault::rewrap(&old, &new, &stored.name, &sealed(&stored))?;
        moved.push(row(&stored.name, resealed));
    }
    store.reseal_secrets(&moved).await?;
    let (auditor, actor) = crate::audit::cli_auditor(env, data_dir, store)?;
    auditor
        .record(
            &actor,
            "vault.rotate",
            "master key",
            serde_json::json!({"from": old.id(), "to": new.id(), "secrets": moved.len()}),
        )
        .await;
    if !from_env {
        std::fs::rename(&pending, master_key_file(data_dir))
            .with_context(|| format!("replacing {}", master_key_file(data_dir).display()))?;
    }
    eprintln!(
        "Master key rotated: {} secret(s) re-wrapped{} under key {} (was {}).",
        moved.len(),
        if already > 0 {
            format!(", {already} already moved by an earlier attempt")
        } else {
            String::new()
        },
        new.id(),
        old.id()
    );
    if from_env {
        eprintln!("Now set {MASTER_KEY_VAR} to the new key before starting the server.");
    }
    Ok(())
}
