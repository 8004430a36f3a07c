//! `atalaya compare`: a client of the running server's `POST /api/v1/compare` that prints
//! the models' answers side by side.

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::cli::CompareArgs;

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let connection = &args.connection;
    let key = crate::client::key(connection.key.as_deref(), &connection.data_dir)?;
    let base = connection.server.trim_end_matches('/');
    let mut body = json!({"models": args.models, "prompt": args.prompt});
    let optional = [
        ("judge", args.judge.clone().map(Value::from)),
        ("criteria", args.criteria.clone().map(Value::from)),
        ("system", args.system.clone().map(Value::from)),
        ("max_tokens", args.max_tokens.map(Value::from)),
        ("temperature", args.temperature.map(Value::from)),
        ("timeout_ms", args.timeout_ms.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    let request = reqwest::Client::new()
        .post(format!("{base}/api/v1/compare"))
        .bearer_auth(key.expose_secret())
        .json(&body);
    let answer = crate::client::answer(request, base).await?;
    if connection.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", table(&answer, args.full));
    Ok(())
}

/// The comparison as a text table: one row per model, then the judge's note and, with
/// `full`, every answer.
fn table(answer: &Value, full: bool) -> String {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    let judged = answer.get("judge").is_some();
    let mut rows = vec![vec![
        "MODEL".to_owned(),
        "STATUS".to_owned(),
        "LATENCY".to_owned(),
        "TTFT".to_owned(),
        "TOKENS IN/OUT".to_owned(),
        "COST $".to_owned(),
    ]];
    if judged {
        rows[0].push("SCORE".to_owned());
    }
    rows[0].push("ANSWER".to_owned());
    for result in &results {
        let ms = |field: &str| {
            result[field]
                .as_f64()
                .map_or("-".to_owned(), |ms| format!("{ms:.0} ms"))
        };
        let tokens = match result.get("usage") {
            Some(usage) => format!(
                "{}/{}{}",
                usage["prompt_tokens"],
                usage["completion_tokens"],
                if usage["estimated"] == true { "~" } else { "" }
            ),
            None => "-".to_owned(),
        };
        let text = match result.get("error") {
            Some(error) => format!(
                "error {}: {}",
                error["code"].as_str().unwrap_or(""),
                error["message"].as_str().unwrap_or("")
            ),
            None => result["content"].as_str().unwrap_or("").to_owned(),
        };
        let mut row = vec![
            result["model"].as_str().unwrap_or("").to_owned(),
            result["status"].to_string(),
            ms("latency_ms"),
            ms("ttft_ms"),
            tokens,
            result["cost_usd"]
                .as_f64()
                .map_or("-".to_owned(), |c| format!("{c:.6}")),
        ];
        if judged {
            row.push(
                result["score"]
                    .as_u64()
                    .map_or("-".to_owned(), |s| format!("{s}/10")),
            );
        }
        row.push(preview(&text, 60));
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(judge) = answer.get("judge") {
        match judge.get("error") {
            Some(error) => out.push_str(&format!(
                "\njudge {} failed: {}\n",
                judge["model"].as_str().unwrap_or(""),
                error["message"].as_str().unwrap_or("")
            )),
            None => {
                out.push_str(&format!(
                    "\njudged by {}\n",
                    judge["model"].as_str().unwrap_or("")
                ));
                for result in &results {
                    if let Some(reason) = result["reason"].as_str() {
                        out.push_str(&format!(
                            "  {}: {}\n",
                            result["model"].as_str().unwrap_or(""),
                            reason
                        ));
                    }
                }
            }
        }
    }
    if full {
        for result in &results {
            out.push_str(&format!(
                "\n== {}\n{}\n",
                result["model"].as_str().unwrap_or(""),
                result["content"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// One line of at most `width` characters.
fn preview(text: &str, width: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        return line;
    }
    let mut cut: String = line.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_answers_errors_and_scores() {
        let answer = json!({
            "results": [
                {"model": "fast", "status": 200, "latency_ms": 12.4, "ttft_ms": 3.2, "content": "Ships\nsail.",
                 "usage": {"prompt_tokens": 9, "completion_tokens": 2, "estimated": false}, "cost_usd": 0.0000012, "score": 8, "reason": "brief"},
                {"model": "broken", "status": 502, "latency_ms": 30.0, "content": "",
                 "error": {"code": "upstream_error", "message": "The provider failed."}}
            ],
            "judge": {"model": "j"}
        });
        let text = table(&answer, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("MODEL") && lines[0].contains("SCORE"));
        assert!(
            lines[1].contains("fast")
                && lines[1].contains("12 ms")
                && lines[1].contains("9/2")
                && lines[1].contains("8/10")
                && lines[1].ends_with("Ships sail.")
        );
        assert!(lines[2].contains("502") && lines[2].contains("error upstream_error"));
        assert!(text.contains("fast: brief"));
        assert_eq!(preview(&"word ".repeat(30), 10).chars().count(), 10);
    }
}
