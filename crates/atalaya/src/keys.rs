//! `atalaya keys`: a client of the running server's `/api/v1/keys`, so the server's key
//! cache learns of every change at once.

use secrecy::ExposeSecret as _;

use crate::cli::{KeysAction, KeysArgs};

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let admin_key = crate::client::key(args.admin_key.as_deref(), &args.data_dir)?;
    let base = args.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &args.action {
        KeysAction::Create {
            name,
            role,
            team,
            models,
            expires_in_days,
            metadata,
            rpm_limit,
            tpm_limit,
            budget_usd,
            soft_budget_usd,
            budget_period,
        } => {
            let mut body = serde_json::json!({ "name": name });
            if let Some(role) = role {
                body["role"] = role.clone().into();
            }
            if let Some(team) = team {
                body["team"] = team.clone().into();
            }
            if let Some(models) = models {
                body["models"] = models.clone().into();
            }
            if let Some(days) = expires_in_days {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as f64)
                    .unwrap_or(0.0);
                body["expires_at_ms"] = ((now + days * 86_400_000.0) as i64).into();
            }
            if let Some(metadata) = metadata {
                body["metadata"] = serde_json::from_str(metadata)
                    .map_err(|error| anyhow::anyhow!("--metadata is not JSON: {error}"))?;
            }
            if let Some(rpm) = rpm_limit {
                body["rpm_limit"] = (*rpm).into();
            }
            if let Some(tpm) = tpm_limit {
                body["tpm_limit"] = (*tpm).into();
            }
            if let Some(usd) = budget_usd {
                body["budget_usd"] = (*usd).into();
            }
            if let Some(usd) = soft_budget_usd {
                body["soft_budget_usd"] = (*usd).into();
            }
            if let Some(period) = budget_period {
                body["budget_period"] = period.clone().into();
            }
            client.post(format!("{base}/api/v1/keys")).json(&body)
        }
        KeysAction::List => client.get(format!("{base}/api/v1/keys")),
        KeysAction::Revoke { id } => client.delete(format!("{base}/api/v1/keys/{id}")),
    };
    let body = crate::client::answer(request.bearer_auth(admin_key.expose_secret()), base).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    match &args.action {
        KeysAction::Create { .. } => {
            println!("id:   {}", body["id"].as_str().unwrap_or(""));
            println!("name: {}", body["name"].as_str().unwrap_or(""));
            println!("role: {}", body["role"].as_str().unwrap_or(""));
            println!("key:  {}", body["key"].as_str().unwrap_or(""));
            eprintln!("Store the key now: it is not shown again.");
        }
        KeysAction::List => {
            println!(
                "{:<40} {:<12} {:<8} {:<10} {:<12} NAME",
                "ID", "PREFIX", "STATE", "ROLE", "TEAM"
            );
            for key in body["data"].as_array().into_iter().flatten() {
                let state = if key["revoked_at_ms"].is_null() {
                    "active"
                } else {
                    "revoked"
                };
                println!(
                    "{:<40} {:<12} {:<8} {:<10} {:<12} {}",
                    key["id"].as_str().unwrap_or(""),
                    key["key_prefix"].as_str().unwrap_or(""),
                    state,
                    key["role"].as_str().unwrap_or(""),
                    key["team"].as_str().unwrap_or("-"),
                    key["name"].as_str().unwrap_or("")
                );
            }
        }
        KeysAction::Revoke { id } => println!("revoked {id}"),
    }
    Ok(())
}
