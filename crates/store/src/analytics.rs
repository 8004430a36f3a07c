//! Analytics over the request log: totals, time series and breakdowns with latency
//! percentiles, for any time range.
//!
//! Scanning a million rows (decoding the request log's blocks) costs far more than a query
//! should, so traffic is also folded into hourly rollups (`request_rollups`): one row per hour and per value of each
//! dimension, holding counts, sums and log-bucket latency histograms. A query reads rollups
//! for the whole hours in its range, plus the raw rows the rollups do not hold yet (those
//! above the `rolled_seq` watermark) and the raw rows of the partial hours at both ends. Rows
//! and rollups are read in one transaction, so a concurrent roll-up never counts a row twice.
//! Queries that filter on two dimensions at once, or group by one dimension while filtering
//! on another, scan the raw rows of the range.

use std::collections::HashMap;

use futures_util::TryStreamExt as _;
use serde::Serialize;
use sqlx::{QueryBuilder, Sqlite};

use crate::log_block::{Block, RowView};
use crate::{Store, StoreError, log_connection};

pub const HOUR_MS: i64 = 3_600_000;

/// What requests can be filtered and broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Key,
    Team,
    Model,
    Provider,
    Deployment,
    Status,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Key,
        Dimension::Team,
        Dimension::Model,
        Dimension::Provider,
        Dimension::Deployment,
        Dimension::Status,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Key => "key",
            Dimension::Team => "team",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
            Dimension::Deployment => "deployment",
            Dimension::Status => "status",
        }
    }

    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|dim| dim.name() == name)
    }
}

/// Which requests to aggregate: `from_ms <= created_at_ms < to_ms`, and each dimension equal
/// to its value (an empty value matches requests without one, e.g. no key).
#[derive(Debug, Clone, Default)]
pub struct AnalyticsFilter {
    pub from_ms: i64,
    pub to_ms: i64,
    pub equals: Vec<(Dimension, String)>,
}

/// How to group the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Total,
    /// Buckets of `step_ms`, aligned to the Unix epoch (so whole UTC hours and days).
    Time {
        step_ms: i64,
    },
    By(Dimension),
}

/// One group of an aggregate: its time bucket (0 unless grouped by time) and dimension value
/// (empty unless grouped by a dimension).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub bucket_ms: i64,
    pub value: String,
}

/// Latency histogram with logarithmic buckets: bucket `i` holds values up to
/// `0.1 ms × 1.08^i`, so estimated percentiles are within 4 % of the truth, from 0.1 ms to
/// beyond nine hours, in at most 256 buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Empty until the first value; then one count per bucket.
    counts: Vec<u64>,
}

const HIST_MIN_MS: f64 = 0.1;
const HIST_GROWTH: f64 = 1.08;
const HIST_BUCKETS: usize = 256;

impl Histogram {
    fn bucket(ms: f64) -> usize {
        if ms.is_nan() || ms <= HIST_MIN_MS {
            return 0;
        }
        ((ms / HIST_MIN_MS).ln() / HIST_GROWTH.ln())
            .ceil()
            .clamp(0.0, (HIST_BUCKETS - 1) as f64) as usize
    }

    /// The value reported for a bucket: the geometric middle of its bounds.
    fn representative(bucket: usize) -> f64 {
        if bucket == 0 {
            return HIST_MIN_MS;
        }
        HIST_MIN_MS * HIST_GROWTH.powf(bucket as f64 - 0.5)
    }

    fn slots(&mut self) -> &mut [u64] {
        if self.counts.is_empty() {
            self.counts = vec![0; HIST_BUCKETS];
        }
        &mut self.counts
    }

    pub fn record(&mut self, ms: f64) {
        self.slots()[Self::bucket(ms)] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.is_empty() {
            return;
        }
        for (slot, count) in self.slots().iter_mut().zip(&other.counts) {
            *slot += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0..=1), or `None` for an empty histogram.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::representative(bucket));
            }
        }
        None
    }

    /// Five bytes per non-empty bucket: the bucket, then its count (u32, little-endian).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (bucket, count) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            out.push(bucket as u8);
            out.extend_from_slice(&u32::try_from(*count).unwrap_or(u32::MAX).to_le_bytes());
        }
        out
    }

    /// Adds an encoded histogram's counts.
    fn merge_encoded(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let slots = self.slots();
        for chunk in bytes.chunks_exact(5) {
            let count = u32::from_le_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]);
            slots[usize::from(chunk[0])] += u64::from(count);
        }
    }
}

/// Counts, sums and histograms of a set of requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub requests: u64,
    /// Status 400 and above.
    pub errors: u64,
    /// Status 500 and above.
    pub server_errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms_sum: f64,
    pub latency: Histogram,
    /// Streamed requests only.
    pub ttft: Histogram,
}

impl Aggregate {
    fn add(&mut self, row: &Facts<'_>) {
        self.requests += 1;
        self.errors += u64::from(row.dims.status >= 400);
        self.server_errors += u64::from(row.dims.status >= 500);
        self.prompt_tokens += row.prompt_tokens.unwrap_or(0).max(0) as u64;
        self.completion_tokens += row.completion_tokens.unwrap_or(0).max(0) as u64;
        self.cost_usd += row.cost_usd.unwrap_or(0.0);
        self.latency_ms_sum += row.latency_ms;
        self.latency.record(row.latency_ms);
        if let Some(ttft) = row.ttft_ms {
            self.ttft.record(ttft);
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.server_errors += other.server_errors;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
        self.latency_ms_sum += other.latency_ms_sum;
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
    }

    /// The figures an API shows.
    pub fn stats(&self) -> Stats {
        let percentiles = |histogram: &Histogram, avg: Option<f64>| {
            Some(Percentiles {
                avg,
                p50: histogram.quantile(0.50)?,
                p95: histogram.quantile(0.95)?,
                p99: histogram.quantile(0.99)?,
            })
        };
        let requests = self.requests;
        Stats {
            requests,
            errors: self.errors,
            server_errors: self.server_errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                self.errors as f64 / requests as f64
            },
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
            cost_usd: self.cost_usd,
            latency_ms: percentiles(
                &self.latency,
                (requests > 0).then(|| self.latency_ms_sum / requests as f64),
            ),
            ttft_ms: percentiles(&self.ttft, None),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub server_errors: u64,
    /// Share of requests answered with status 400 or above.
    pub error_rate: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    /// Absent when there were no requests.
    pub latency_ms: Option<Percentiles>,
    /// Time to first token of streamed requests; absent when there were none.
    pub ttft_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// What the rollups take from a request-log row, borrowed from a row read back or one being
/// written.
pub(crate) struct Facts<'a> {
    created_at_ms: i64,
    dims: Dims<'a>,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cost_usd: Option<f64>,
}

/// A row's value in every dimension.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Dims<'a> {
    key_id: Option<&'a str>,
    team: Option<&'a str>,
    model: Option<&'a str>,
    provider: Option<&'a str>,
    deployment: Option<&'a str>,
    status: i64,
}

/// Both row types name the columns alike.
macro_rules! facts_from {
    ($row:ty) => {
        impl<'a> From<&'a $row> for Facts<'a> {
            fn from(row: &'a $row) -> Facts<'a> {
                Facts {
                    created_at_ms: row.created_at_ms,
                    dims: Dims {
                        key_id: row.key_id.as_deref(),
                        team: row.team.as_deref(),
                        model: row.model.as_deref(),
                        provider: row.provider.as_deref(),
                        deployment: row.deployment.as_deref(),
                        status: row.status,
                    },
                    latency_ms: row.latency_ms,
                    ttft_ms: row.ttft_ms,
                    prompt_tokens: row.prompt_tokens,
                    completion_tokens: row.completion_tokens,
                    cost_usd: row.cost_usd,
                }
            }
        }
    };
}

facts_from!(RowView<'_>);
facts_from!(crate::RequestLogRow);

impl<'a> Facts<'a> {
    fn value(&self, dim: Dimension) -> DimValue<'a> {
        self.dims.value(dim)
    }
}

impl<'a> Dims<'a> {
    fn value(&self, dim: Dimension) -> DimValue<'a> {
        let text = match dim {
            Dimension::Key => self.key_id,
            Dimension::Team => self.team,
            Dimension::Model => self.model,
            Dimension::Provider => self.provider,
            Dimension::Deployment => self.deployment,
            Dimension::Status => return DimValue::Status(self.status),
        };
        DimValue::Text(text.unwrap_or(""))
    }
}

/// A rollup series' value, made text only when it is written.
#[derive(PartialEq, Eq, Hash)]
pub(crate) enum DimValue<'a> {
    Text(&'a str),
    Status(i64),
}

impl DimValue<'_> {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            DimValue::Text(text) => std::borrow::Cow::Borrowed(text),
            DimValue::Status(status) => std::borrow::Cow::Owned(status.to_string()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct RollupRow {
    value: String,
    bucket_ms: i64,
    requests: i64,
    errors: i64,
    server_errors: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: f64,
    latency_ms_sum: f64,
    latency_hist: Vec<u8>,
    ttft_hist: Vec<u8>,
}

impl RollupRow {
    /// Reads the columns of [`ROLLUP_COLUMNS`], in order.
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<RollupRow> {
        Ok(RollupRow {
            value: row.get(0)?,
            bucket_ms: row.get(1)?,
            requests: row.get(2)?,
            errors: row.get(3)?,
            server_errors: row.get(4)?,
            prompt_tokens: row.get(5)?,
            completion_tokens: row.get(6)?,
            cost_usd: row.get(7)?,
            latency_ms_sum: row.get(8)?,
            latency_hist: row.get(9)?,
            ttft_hist: row.get(10)?,
        })
    }

    /// Adds this row to `total` (decoding histograms straight into it).
    fn merge_into(&self, total: &mut Aggregate) {
        let count = |n: i64| n.max(0) as u64;
        total.requests += count(self.requests);
        total.errors += count(self.errors);
        total.server_errors += count(self.server_errors);
        total.prompt_tokens += count(self.prompt_tokens);
        total.completion_tokens += count(self.completion_tokens);
        total.cost_usd += self.cost_usd;
        total.latency_ms_sum += self.latency_ms_sum;
        total.latency.merge_encoded(&self.latency_hist);
        total.ttft.merge_encoded(&self.ttft_hist);
    }
}

const ROLLUP_COLUMNS: &str = "SELECT value, bucket_ms, requests, errors, server_errors, \
     prompt_tokens, completion_tokens, cost_usd, latency_ms_sum, latency_hist, ttft_hist \
     FROM request_rollups";

fn floor_to(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

fn ceil_to(ms: i64, step: i64) -> i64 {
    floor_to(ms + step - 1, step)
}

/// The rollup series that answers a query, if one does: `(dim, value)`, where dim `""` is the
/// total and a `None` value means every value of the dimension.
fn rollup_series(filter: &AnalyticsFilter, grouping: Grouping) -> Option<(&str, Option<&str>)> {
    if let Grouping::Time { step_ms } = grouping
        && step_ms % HOUR_MS != 0
    {
        return None;
    }
    match (filter.equals.as_slice(), grouping) {
        ([], Grouping::By(dim)) => Some((dim.name(), None)),
        ([], _) => Some(("", Some(""))),
        ([(dim, value)], Grouping::By(by)) if by == *dim => Some((dim.name(), Some(value))),
        ([(dim, value)], Grouping::Total | Grouping::Time { .. }) => {
            Some((dim.name(), Some(value)))
        }
        _ => None,
    }
}

impl Store {
    /// Aggregates the requests `filter` selects, grouped by `grouping`, in group order.
    pub async fn analytics(
        &self,
        filter: &AnalyticsFilter,
        grouping: Grouping,
    ) -> Result<Vec<(GroupKey, Aggregate)>, StoreError> {
        let mut groups: HashMap<GroupKey, Aggregate> = HashMap::new();
        let (from, to) = (filter.from_ms, filter.to_ms);
        if to > from {
            let (first_hour, last_hour) = (ceil_to(from, HOUR_MS), floor_to(to, HOUR_MS));
            let mut transaction = self.pool.begin().await?;
            match rollup_series(filter, grouping).filter(|_| first_hour < last_hour) {
                Some((dim, value)) => {
                    let (watermark,): (i64,) = sqlx::query_as(
                        "SELECT value FROM analytics_state WHERE name = 'rolled_seq'",
                    )
                    .fetch_one(&mut *transaction)
                    .await?;
                    let mut query = QueryBuilder::<Sqlite>::new(ROLLUP_COLUMNS);
                    query.push(" WHERE dim = ").push_bind(dim);
                    if let Some(value) = value {
                        query.push(" AND value = ").push_bind(value);
                    }
                    query
                        .push(" AND bucket_ms >= ")
                        .push_bind(first_hour)
                        .push(" AND bucket_ms < ")
                        .push_bind(last_hour);
                    let mut rows = query.build_query_as::<RollupRow>().fetch(&mut *transaction);
                    while let Some(row) = rows.try_next().await? {
                        let key = group_key(grouping, row.bucket_ms, || row.value.clone());
                        row.merge_into(groups.entry(key).or_default());
                    }
                    drop(rows);
                    let spans = [
                        (from, first_hour, None),
                        (first_hour, last_hour, Some(watermark)),
                        (last_hour, to, None),
                    ];
                    for (start, end, above) in spans {
                        if start < end {
                            scan_raw(
                                &mut transaction,
                                filter,
                                (start, end, above),
                                grouping,
                                &mut groups,
                            )
                            .await?;
                        }
                    }
                }
                None => {
                    scan_raw(
                        &mut transaction,
                        filter,
                        (from, to, None),
                        grouping,
                        &mut groups,
                    )
                    .await?;
                }
            }
            transaction.commit().await?;
        }
        let mut groups: Vec<(GroupKey, Aggregate)> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(groups)
    }

    /// Folds up to `max_rows` request-log rows not yet rolled up into the hourly rollups, and
    /// returns how many it folded. Runs in one write transaction with the watermark, so a
    /// crash leaves either all of a pass or none.
    pub async fn roll_up_request_logs(&self, max_rows: u32) -> Result<usize, StoreError> {
        self.on_log_connection(move |connection| roll_up(connection, max_rows))
            .await
    }
}

fn roll_up(connection: &mut rusqlite::Connection, max_rows: u32) -> rusqlite::Result<usize> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let watermark = watermark(&transaction)?;
    // The blocks holding rows above the watermark, until they hold `max_rows` of them. Only
    // the first can hold rows at or below it too (blocks do not share seqs).
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut above = 0;
    {
        let mut statement = transaction.prepare_cached(&format!(
            "SELECT first_seq, rows, data FROM request_log_blocks WHERE {} ORDER BY first_seq",
            blocks_above("?1")
        ))?;
        let mut found = statement.query([watermark])?;
        while above < max_rows as usize {
            let Some(row) = found.next()? else { break };
            let (first_seq, rows, data): (i64, i64, Vec<u8>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            above += if first_seq > watermark {
                rows as usize
            } else {
                Block::parse(&data)
                    .map_err(log_connection::corrupt)?
                    .filter(|row| row.as_ref().map_or(true, |row| row.seq > watermark))
                    .count()
            };
            blocks.push(data);
        }
    }
    let mut rows = Vec::with_capacity(above.min(max_rows as usize));
    'blocks: for data in &blocks {
        for row in Block::parse(data).map_err(log_connection::corrupt)? {
            let row = row.map_err(log_connection::corrupt)?;
            if row.seq <= watermark {
                continue;
            }
            if rows.len() == max_rows as usize {
                break 'blocks;
            }
            rows.push(row);
        }
    }
    let Some(last_seq) = rows.last().map(|row| row.seq) else {
        return Ok(0);
    };
    apply(&transaction, deltas(rows.iter().map(Facts::from)), last_seq)?;
    transaction.commit()?;
    Ok(rows.len())
}

/// The condition selecting the blocks that may hold rows above the seq `seq` (a parameter
/// or a number): those that start above it, and the one it falls in, found by the primary key
/// rather than a scan of every block.
fn blocks_above(seq: &str) -> String {
    format!(
        "first_seq >= COALESCE((SELECT MAX(first_seq) FROM request_log_blocks \
         WHERE first_seq <= {seq}), 0) AND last_seq > {seq}"
    )
}

/// The rollup watermark: the last request-log seq folded into the rollups.
pub(crate) fn watermark(connection: &rusqlite::Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("SELECT value FROM analytics_state WHERE name = 'rolled_seq'")?
        .query_row([], |row| row.get(0))
}

/// Rollup changes keyed by dimension, value and hour.
/// Maps hashed with foldhash: std's SipHash over a row's five names was most of folding it
/// (counted with callgrind).
type Fast = foldhash::fast::RandomState;

pub(crate) type Deltas<'a> = HashMap<(&'static str, DimValue<'a>, i64), Aggregate, Fast>;

/// What `rows` add to the rollups. The rows of a batch mostly share their values, so they are
/// summed per hour and combination of values first, and each sum then goes to its seven
/// series: one map entry and one histogram record a row instead of seven.
pub(crate) fn deltas<'a>(rows: impl Iterator<Item = Facts<'a>>) -> Deltas<'a> {
    let mut combinations: HashMap<(i64, Dims<'a>), Aggregate, Fast> = HashMap::default();
    for row in rows {
        let hour = floor_to(row.created_at_ms, HOUR_MS);
        combinations.entry((hour, row.dims)).or_default().add(&row);
    }
    let mut deltas = Deltas::default();
    for ((hour, dims), aggregate) in combinations {
        deltas
            .entry(("", DimValue::Text(""), hour))
            .or_default()
            .merge(&aggregate);
        for dim in Dimension::ALL {
            deltas
                .entry((dim.name(), dims.value(dim), hour))
                .or_default()
                .merge(&aggregate);
        }
    }
    deltas
}

/// Writes `deltas` into the rollups (read, merge, replace) and moves the watermark to
/// `last_seq`. Call inside a write transaction.
pub(crate) fn apply(
    connection: &rusqlite::Connection,
    deltas: Deltas<'_>,
    last_seq: i64,
) -> rusqlite::Result<()> {
    let mut read = connection.prepare_cached(&format!(
        "{ROLLUP_COLUMNS} WHERE dim = ?1 AND value = ?2 AND bucket_ms = ?3"
    ))?;
    let mut write = connection.prepare_cached(
        "INSERT OR REPLACE INTO request_rollups (dim, value, bucket_ms, requests, errors, \
         server_errors, prompt_tokens, completion_tokens, cost_usd, latency_ms_sum, \
         latency_hist, ttft_hist) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for ((dim, value, hour), delta) in deltas {
        let value = value.text();
        let mut total = delta;
        let mut existing = read.query(rusqlite::params![dim, value, hour])?;
        if let Some(row) = existing.next()? {
            RollupRow::from_sqlite(row)?.merge_into(&mut total);
        }
        drop(existing);
        write.execute(rusqlite::params![
            dim,
            value,
            hour,
            total.requests as i64,
            total.errors as i64,
            total.server_errors as i64,
            total.prompt_tokens as i64,
            total.completion_tokens as i64,
            total.cost_usd,
            total.latency_ms_sum,
            total.latency.encode(),
            total.ttft.encode(),
        ])?;
    }
    connection
        .prepare_cached("UPDATE analytics_state SET value = ?1 WHERE name = 'rolled_seq'")?
        .execute([last_seq])?;
    Ok(())
}

fn group_key(grouping: Grouping, created_ms: i64, value: impl FnOnce() -> String) -> GroupKey {
    match grouping {
        Grouping::Total => GroupKey {
            bucket_ms: 0,
            value: String::new(),
        },
        Grouping::Time { step_ms } => GroupKey {
            bucket_ms: floor_to(created_ms, step_ms.max(1)),
            value: String::new(),
        },
        Grouping::By(_) => GroupKey {
            bucket_ms: 0,
            value: value(),
        },
    }
}

/// Adds the raw rows in `[start, end)` (and above seq `above`, when given) to `groups`.
async fn scan_raw(
    connection: &mut sqlx::SqliteConnection,
    filter: &AnalyticsFilter,
    (start, end, above): (i64, i64, Option<i64>),
    grouping: Grouping,
    groups: &mut HashMap<GroupKey, Aggregate>,
) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT data FROM request_log_blocks WHERE ");
    // The rows above the watermark are few and recent: find their blocks by seq.
    if let Some(seq) = above {
        // A seq read from the database, so it can be written into the statement.
        query.push(blocks_above(&seq.to_string())).push(" AND ");
    }
    query
        .push("max_created_ms >= ")
        .push_bind(start)
        .push(" AND min_created_ms < ")
        .push_bind(end);
    let statuses: Vec<Option<i64>> = filter
        .equals
        .iter()
        .map(|(dim, value)| (*dim == Dimension::Status).then(|| value.parse().unwrap_or(-1)))
        .collect();
    let selected = |dims: &Dims<'_>| {
        filter
            .equals
            .iter()
            .zip(&statuses)
            .all(|((dim, value), status)| match (dims.value(*dim), status) {
                (DimValue::Status(actual), Some(status)) => actual == *status,
                (DimValue::Text(actual), None) => actual == value,
                _ => false,
            })
    };
    let mut blocks = query.build_query_scalar::<Vec<u8>>().fetch(connection);
    while let Some(data) = blocks.try_next().await? {
        for row in Block::parse(&data).map_err(StoreError::CorruptLog)? {
            let row = row.map_err(StoreError::CorruptLog)?;
            if row.created_at_ms < start
                || row.created_at_ms >= end
                || above.is_some_and(|seq| row.seq <= seq)
            {
                continue;
            }
            let facts = Facts::from(&row);
            if !selected(&facts.dims) {
                continue;
            }
            let key = match grouping {
                Grouping::By(dim) => group_key(grouping, facts.created_at_ms, || {
                    facts.value(dim).text().into_owned()
                }),
                _ => group_key(grouping, facts.created_at_ms, String::new),
            };
            groups.entry(key).or_default().add(&facts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
