//! Error tracking and the server's own warnings in the database: grouping reports by
//! fingerprint, listing, stats per service and component, resolving, and a sample of
//! occurrences per group.

use std::collections::HashMap;

use atalaya_telemetry::{Report, Severity};
use serde::Serialize;

use crate::{Store, StoreError};

/// Occurrences kept per group from one batch; the count still includes every one.
const SAMPLES_PER_BATCH: usize = 5;

/// A group's fingerprint: where it happened and what kind of failure, never the message's
/// variable parts. FNV-1a over the identifying fields, as 16 hex digits.
pub fn fingerprint(report: &Report) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |text: &str| {
        for byte in text.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&report.service);
    feed(&report.component);
    feed(report.code.as_deref().unwrap_or(""));
    match (&report.file, report.line) {
        (Some(file), Some(line)) => {
            feed(file);
            feed(&line.to_string());
        }
        _ => feed(&normalize(&report.message)),
    }
    // A failing upstream is its own problem: group request failures per deployment.
    feed(report.context.get("deployment").map_or("", String::as_str));
    format!("{hash:016x}")
}

/// The message with its numbers blanked, so `after 3001 ms` and `after 3002 ms` match.
fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// What a batch changed about a group, for the live feed and alerts.
#[derive(Debug, Clone, Serialize)]
pub struct GroupChange {
    pub fingerprint: String,
    pub severity: Severity,
    pub service: String,
    pub component: String,
    pub code: Option<String>,
    pub message: String,
    /// Occurrences in this batch.
    pub added: u64,
    pub count: u64,
    /// Seen for the first time.
    pub new: bool,
    /// Back after being resolved.
    pub regressed: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorGroup {
    pub fingerprint: String,
    pub severity: String,
    pub service: String,
    pub component: String,
    pub code: Option<String>,
    pub message: String,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub resolved: bool,
    pub resolved_at_ms: Option<i64>,
    pub regressions: i64,
    #[serde(serialize_with = "raw_json")]
    pub last_context: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorOccurrence {
    pub time_ms: i64,
    pub message: String,
    #[serde(serialize_with = "raw_json")]
    pub context: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ServerLogRow {
    pub seq: i64,
    pub time_ms: i64,
    pub level: String,
    pub service: String,
    pub component: String,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub request_id: Option<String>,
    #[serde(serialize_with = "raw_json")]
    pub fields: String,
}

/// Stored JSON text served as JSON.
fn raw_json<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    value.serialize(serializer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    Open,
    Resolved,
    All,
}

#[derive(Debug, Clone)]
pub struct ErrorQuery {
    pub status: ErrorStatus,
    /// This severity and worse.
    pub min_severity: Option<Severity>,
    pub service: Option<String>,
    pub component: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// Error figures for one service, component and severity.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorStat {
    pub service: String,
    pub component: String,
    pub severity: String,
    pub groups: i64,
    pub open_groups: i64,
    pub occurrences: i64,
    pub last_seen_ms: i64,
}

fn severity_rank(text: &str) -> Option<Severity> {
    Severity::parse(text)
}

impl Store {
    /// Writes a batch of reports in one transaction: warnings and errors from the log go to
    /// `server_logs`, tracked errors into their groups. Returns what changed per group.
    pub async fn record_reports(&self, reports: &[Report]) -> Result<Vec<GroupChange>, StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for report in reports.iter().filter(|r| r.log) {
            let fields = serde_json::to_string(&report.context).unwrap_or_default();
            sqlx::query(
                "INSERT INTO server_logs (time_ms, level, service, component, message, file, line, \
                 request_id, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(report.time_ms)
            .bind(report.level)
            .bind(&report.service)
            .bind(&report.component)
            .bind(&report.message)
            .bind(&report.file)
            .bind(report.line.map(i64::from))
            .bind(report.context.get("request_id"))
            .bind(fields)
            .execute(&mut *transaction)
            .await?;
        }
        // Grouped first, so a burst of one error is one read and one write.
        let mut batches: HashMap<String, Vec<&Report>> = HashMap::new();
        let mut order = Vec::new();
        for report in reports.iter().filter(|r| r.severity.is_some()) {
            let fingerprint = fingerprint(report);
            let entry = batches.entry(fingerprint.clone()).or_default();
            if entry.is_empty() {
                order.push(fingerprint);
            }
            entry.push(report);
        }
        let mut changes = Vec::new();
        for fingerprint in order {
            let group = &batches[&fingerprint];
            let (Some(first), Some(last)) = (group.first(), group.last()) else {
                continue;
            };
            let severity = group
                .iter()
                .filter_map(|r| r.severity)
                .max()
                .unwrap_or(Severity::Medium);
            let existing: Option<(String, i64, bool)> = sqlx::query_as(
                "SELECT severity, count, resolved FROM error_groups WHERE fingerprint = ?",
            )
            .bind(&fingerprint)
            .fetch_optional(&mut *transaction)
            .await?;
            let added = group.len() as u64;
            let context = serde_json::to_string(&last.context).unwrap_or_default();
            let change = match existing {
                None => {
                    sqlx::query(
                        "INSERT INTO error_groups (fingerprint, severity, service, component, code, \
                         message, module, file, line, count, first_seen_ms, last_seen_ms, \
                         last_context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&fingerprint)
                    .bind(severity.as_str())
                    .bind(&first.service)
                    .bind(&first.component)
                    .bind(&first.code)
                    .bind(&first.message)
                    .bind(&first.module)
                    .bind(&first.file)
                    .bind(first.line.map(i64::from))
                    .bind(added as i64)
                    .bind(first.time_ms)
                    .bind(last.time_ms)
                    .bind(&context)
                    .execute(&mut *transaction)
                    .await?;
                    (severity, added, true, false)
                }
                Some((stored, count, resolved)) => {
                    let severity = severity_rank(&stored).map_or(severity, |s| s.max(severity));
                    sqlx::query(
                        "UPDATE error_groups SET severity = ?, count = count + ?, \
                         last_seen_ms = max(last_seen_ms, ?), message = ?, last_context = ?, \
                         resolved = 0, resolved_at_ms = NULL, regressions = regressions + ? \
                         WHERE fingerprint = ?",
                    )
                    .bind(severity.as_str())
                    .bind(added as i64)
                    .bind(last.time_ms)
                    .bind(&last.message)
                    .bind(&context)
                    .bind(i64::from(resolved))
                    .bind(&fingerprint)
                    .execute(&mut *transaction)
                    .await?;
                    (severity, count.max(0) as u64 + added, false, resolved)
                }
            };
            for report in group.iter().rev().take(SAMPLES_PER_BATCH) {
                sqlx::query(
                    "INSERT INTO error_occurrences (fingerprint, time_ms, message, context) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(&fingerprint)
                .bind(report.time_ms)
                .bind(&report.message)
                .bind(serde_json::to_string(&report.context).unwrap_or_default())
                .execute(&mut *transaction)
                .await?;
            }
            let (severity, count, new, regressed) = change;
            changes.push(GroupChange {
                fingerprint,
                severity,
                service: last.service.clone(),
                component: last.component.clone(),
                code: last.code.clone(),
                message: last.message.clone(),
                added,
                count,
                new,
                regressed,
            });
        }
        transaction.commit().await?;
        Ok(changes)
    }

    pub async fn list_error_groups(
        &self,
        query: &ErrorQuery,
    ) -> Result<Vec<ErrorGroup>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT fingerprint, severity, service, component, code, message, module, file, line, \
             count, first_seen_ms, last_seen_ms, resolved, resolved_at_ms, regressions, \
             last_context FROM error_groups WHERE 1 = 1",
        );
        match query.status {
            ErrorStatus::Open => {
                sql.push(" AND resolved = 0");
            }
            ErrorStatus::Resolved => {
                sql.push(" AND resolved = 1");
            }
            ErrorStatus::All => {}
        }
        if let Some(min) = query.min_severity {
            let names: Vec<&str> = Severity::ALL
                .into_iter()
                .filter(|s| *s >= min)
                .map(Severity::as_str)
                .collect();
            sql.push(" AND severity IN (");
            let mut list = sql.separated(", ");
            for name in names {
                list.push_bind(name);
            }
            sql.push(")");
        }
        if let Some(service) = &query.service {
            sql.push(" AND service = ").push_bind(service.clone());
        }
        if let Some(component) = &query.component {
            sql.push(" AND component = ").push_bind(component.clone());
        }
        sql.push(" ORDER BY last_seen_ms DESC, fingerprint LIMIT ")
            .push_bind(i64::from(query.limit.clamp(1, 1_000)))
            .push(" OFFSET ")
            .push_bind(i64::from(query.offset));
        Ok(sql.build_query_as().fetch_all(&self.pool).await?)
    }

    pub async fn error_group(&self, fingerprint: &str) -> Result<Option<ErrorGroup>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT fingerprint, severity, service, component, code, message, module, file, line, \
             count, first_seen_ms, last_seen_ms, resolved, resolved_at_ms, regressions, \
             last_context FROM error_groups WHERE fingerprint = ?",
        )
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The group's most recent sampled occurrences, newest first.
    pub async fn error_occurrences(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> Result<Vec<ErrorOccurrence>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT time_ms, message, context FROM error_occurrences WHERE fingerprint = ? \
             ORDER BY seq DESC LIMIT ?",
        )
        .bind(fingerprint)
        .bind(i64::from(limit.clamp(1, 1_000)))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a group resolved (or open again); false when there is no such group.
    pub async fn set_error_resolved(
        &self,
        fingerprint: &str,
        resolved: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE error_groups SET resolved = ?, resolved_at_ms = ? WHERE fingerprint = ?",
        )
        .bind(resolved)
        .bind(resolved.then_some(now_ms))
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Figures per service, component and severity for groups seen since `since_ms`.
    pub async fn error_stats(&self, since_ms: i64) -> Result<Vec<ErrorStat>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT service, component, severity, COUNT(*) AS groups, \
             SUM(resolved = 0) AS open_groups, SUM(count) AS occurrences, \
             MAX(last_seen_ms) AS last_seen_ms FROM error_groups WHERE last_seen_ms >= ? \
             GROUP BY service, component, severity ORDER BY occurrences DESC",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The server's own warnings and errors, newest first, older than `before_seq`.
    pub async fn list_server_logs(
        &self,
        limit: u32,
        before_seq: Option<i64>,
        errors_only: bool,
    ) -> Result<Vec<ServerLogRow>, StoreError> {
        let sql = if errors_only {
            "SELECT seq, time_ms, level, service, component, message, file, line, request_id, \
             fields FROM server_logs WHERE seq < ? AND level = 'error' ORDER BY seq DESC LIMIT ?"
        } else {
            "SELECT seq, time_ms, level, service, component, message, file, line, request_id, \
             fields FROM server_logs WHERE seq < ? ORDER BY seq DESC LIMIT ?"
        };
        Ok(sqlx::query_as(sql)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(i64::from(limit.clamp(1, 1_000)))
            .fetch_all(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn report(line: u32, severity: Option<Severity>, message: &str, time_ms: i64) -> Report {
        Report {
            time_ms,
            level: if severity.is_some() { "error" } else { "warn" },
            severity,
            log: true,
            service: "gateway".into(),
            component: "atalaya_gateway::dispatch".into(),
            code: None,
            message: message.into(),
            module: Some("atalaya_gateway::dispatch".into()),
            file: Some("crates/gateway/src/dispatch.rs".into()),
            line: Some(line),
            context: BTreeMap::from([("request_id".to_owned(), format!("req-{time_ms}"))]),
        }
    }

    #[tokio::test]
    async fn reports_group_by_fingerprint_and_resolved_groups_regress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/e.db", dir.path().display()))
            .await
            .unwrap();
        let batch = [
            report(10, Some(Severity::High), "timed out after 3001 ms", 1_000),
            report(10, Some(Severity::High), "timed out after 3002 ms", 2_000),
            report(20, Some(Severity::Medium), "other", 1_500),
            report(30, None, "just a warning", 1_600),
        ];
        let changes = store.record_reports(&batch).await.unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.new && !c.regressed));
        assert_eq!(changes[0].added, 2);
        let open = ErrorQuery {
            status: ErrorStatus::Open,
            min_severity: None,
            service: None,
            component: None,
            limit: 10,
            offset: 0,
        };
        let groups = store.list_error_groups(&open).await.unwrap();
        assert_eq!(groups.len(), 2);
        let timeout = &groups[0];
        assert_eq!(timeout.count, 2);
        assert_eq!(timeout.first_seen_ms, 1_000);
        assert_eq!(timeout.last_seen_ms, 2_000);
        assert_eq!(timeout.line, Some(10));
        assert!(timeout.last_context.contains("req-2000"));
        // Logged warnings are kept, but not tracked.
        assert_eq!(
            store.list_server_logs(10, None, false).await.unwrap().len(),
            4
        );
        assert_eq!(
            store.list_server_logs(10, None, true).await.unwrap().len(),
            3
        );

        assert!(
            store
                .set_error_resolved(&timeout.fingerprint, true, 5_000)
                .await
                .unwrap()
        );
        assert_eq!(store.list_error_groups(&open).await.unwrap().len(), 1);
        let again = store
            .record_reports(&[report(
                10,
                Some(Severity::Critical),
                "timed out after 9 ms",
                6_000,
            )])
            .await
            .unwrap();
        assert!(again[0].regressed && !again[0].new);
        assert_eq!(again[0].count, 3);
        assert_eq!(
            again[0].severity,
            Severity::Critical,
            "the worst severity seen"
        );
        let group = store
            .error_group(&timeout.fingerprint)
            .await
            .unwrap()
            .unwrap();
        assert!(!group.resolved);
        assert_eq!(group.regressions, 1);
        let occurrences = store
            .error_occurrences(&timeout.fingerprint, 10)
            .await
            .unwrap();
        assert_eq!(occurrences.len(), 3);
        assert_eq!(occurrences[0].time_ms, 6_000);
        let critical = ErrorQuery {
            min_severity: Some(Severity::High),
            ..open.clone()
        };
        assert_eq!(store.list_error_groups(&critical).await.unwrap().len(), 1);
        let stats = store.error_stats(0).await.unwrap();
        assert_eq!(stats.iter().map(|s| s.occurrences).sum::<i64>(), 4);
        assert!(!store.set_error_resolved("nope", true, 1).await.unwrap());
    }

    #[tokio::test]
    async fn retention_deletes_old_errors_server_logs_and_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/r.db", dir.path().display()))
            .await
            .unwrap();
        let day = 86_400_000;
        store
            .record_reports(&[
                report(10, Some(Severity::High), "old", 1_000),
                report(20, Some(Severity::High), "recent", 10 * day),
                report(30, None, "old warning", 1_000),
            ])
            .await
            .unwrap();
        let alert = |time_ms| crate::AlertRow {
            seq: 0,
            time_ms,
            rule: "r".into(),
            kind: "budget".into(),
            severity: "warning".into(),
            subject: "s".into(),
            state: "firing".into(),
            summary: "x".into(),
            details: "{}".into(),
            channels: "[]".into(),
            suppressed: None,
        };
        store.insert_alert(&alert(1_000)).await.unwrap();
        store.insert_alert(&alert(10 * day)).await.unwrap();
        let keep = Some(std::time::Duration::from_secs(86_400));
        let retention = crate::Retention {
            request_logs: None,
            rollups: None,
            errors: keep,
            server_logs: keep,
            alerts: keep,
        };
        let deleted = store
            .apply_retention(&retention, 10 * day + 1)
            .await
            .unwrap();
        assert_eq!(
            (deleted.errors, deleted.server_logs, deleted.alerts),
            (1, 2, 1)
        );
        let all = ErrorQuery {
            status: ErrorStatus::All,
            min_severity: None,
            service: None,
            component: None,
            limit: 10,
            offset: 0,
        };
        let groups = store.list_error_groups(&all).await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].message, "recent");
        assert_eq!(
            store
                .error_occurrences(&groups[0].fingerprint, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store.list_server_logs(10, None, false).await.unwrap().len(),
            1
        );
        assert_eq!(store.list_alerts(10, None).await.unwrap().len(), 1);
    }
}
