//! `atalaya keys`: a client of the running server's `/api/v1/keys`, so the server's key
//! cache learns of every change at once.

use secrecy::ExposeSecret as _;

use crate::cli::{KeysAction, KeysArgs};

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let admin_key = crate::client::key(args.admin_key.as_deref(), &args.data_dir)?;
    let base = args.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &args.action {
        KeysAction::Create { name } => client
            .post(format!("{base}/api/v1/keys"))
            .json(&serde_json::json!({ "name": name })),
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
            println!("key:  {}", body["key"].as_str().unwrap_or(""));
            eprintln!("Store the key now: it is not shown again.");
        }
        KeysAction::List => {
            println!("{:<40} {:<12} {:<8} NAME", "ID", "PREFIX", "STATE");
            for key in body["data"].as_array().into_iter().flatten() {
                let state = if key["revoked_at_ms"].is_null() {
                    "active"
                } else {
                    "revoked"
                };
                println!(
                    "{:<40} {:<12} {:<8} {}",
                    key["id"].as_str().unwrap_or(""),
                    key["key_prefix"].as_str().unwrap_or(""),
                    state,
                    key["name"].as_str().unwrap_or("")
                );
            }
        }
        KeysAction::Revoke { id } => println!("revoked {id}"),
    }
    Ok(())
}
