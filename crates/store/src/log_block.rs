//! How the request log is stored: one database row per batch the writer commits (a *block*),
//! holding that batch's rows in a compact binary form.
//!
//! One SQLite row per request cost more than everything else the log does: building a
//! 22-column record, inserting it into the table's B-tree and the time index, and copying
//! every bound string (bench/logging/RESULTS.md counts it with callgrind). A block is one
//! record and one B-tree insert for up to a batch of rows; the rows' repeated names (key,
//! team, model, provider, deployment, endpoint, errors) are stored once per block.
//!
//! Layout, integers as LEB128 varints (`z`: zigzag-encoded signed):
//!
//! ```text
//! block  = version:u8  base_seq  z(base_ms)  string_count  string*  row_count  row*
//! string = length  utf8-bytes
//! row    = seq - base_seq  z(created_at_ms - base_ms)  flags:u8  length request-id-bytes
//!          key_id team endpoint model provider upstream_model deployment fallback_path error
//!                                               (each 0 for none, else 1 + string index)
//!          z(status)  latency_ms:f64  [ttft_ms:f64]  [z(prompt)]  [z(completion)]
//!          [z(cached)]  [cost_usd:f64]  z(attempts)  z(retries)
//! ```
//!
//! `f64`s are 8 bytes little-endian; the bracketed fields are present when their flag is set.
//! A row's seq is at least its block's `base_seq`; retention may drop rows from a block, so
//! the seqs in a block need not be contiguous.

use std::collections::HashMap;

use crate::{LogText, RequestLogRow};

const VERSION: u8 = 1;

const STREAM: u8 = 1;
const USAGE_ESTIMATED: u8 = 1 << 1;
const HAS_TTFT: u8 = 1 << 2;
const HAS_PROMPT: u8 = 1 << 3;
const HAS_COMPLETION: u8 = 1 << 4;
const HAS_CACHED: u8 = 1 << 5;
const HAS_COST: u8 = 1 << 6;

/// Text fields stored as references to the block's strings.
const NAMED_FIELDS: usize = 9;

/// A block that does not decode: written by a newer version, or damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptBlock(&'static str);

impl std::fmt::Display for CorruptBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request-log block does not decode: {}", self.0)
    }
}

impl std::error::Error for CorruptBlock {}

/// What the block's columns say about it, so readers can pass over a block without
/// decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub last_seq: i64,
    pub min_created_ms: i64,
    pub max_created_ms: i64,
    pub rows: i64,
}

/// Encodes `rows` (each with its seq, none below `base_seq`, in ascending order) into `out`,
/// which is cleared first. `rows` must not be empty.
pub(crate) fn encode<'r>(
    base_seq: i64,
    rows: impl Iterator<Item = (i64, &'r RequestLogRow)>,
    out: &mut Vec<u8>,
) -> Summary {
    let mut strings = Strings::default();
    let mut body = Vec::with_capacity(8 * 1024);
    let mut summary = Summary {
        last_seq: base_seq,
        min_created_ms: i64::MAX,
        max_created_ms: i64::MIN,
        rows: 0,
    };
    let mut base_ms = None;
    for (seq, row) in rows {
        debug_assert!(seq >= base_seq && (summary.rows == 0 || seq > summary.last_seq));
        let base_ms = *base_ms.get_or_insert(row.created_at_ms);
        summary.last_seq = seq;
        summary.min_created_ms = summary.min_created_ms.min(row.created_at_ms);
        summary.max_created_ms = summary.max_created_ms.max(row.created_at_ms);
        summary.rows += 1;
        put_varint(&mut body, (seq - base_seq) as u64);
        put_zigzag(&mut body, row.created_at_ms.wrapping_sub(base_ms));
        let mut flags = 0;
        for (set, flag) in [
            (row.stream, STREAM),
            (row.usage_estimated, USAGE_ESTIMATED),
            (row.ttft_ms.is_some(), HAS_TTFT),
            (row.prompt_tokens.is_some(), HAS_PROMPT),
            (row.completion_tokens.is_some(), HAS_COMPLETION),
            (row.cached_tokens.is_some(), HAS_CACHED),
            (row.cost_usd.is_some(), HAS_COST),
        ] {
            if set {
                flags |= flag;
            }
        }
        body.push(flags);
        put_bytes(&mut body, row.request_id.as_bytes());
        for (field, text) in names(row).into_iter().enumerate() {
            let reference = strings.reference(field, text);
            put_varint(&mut body, u64::from(reference));
        }
        put_zigzag(&mut body, row.status);
        body.extend_from_slice(&row.latency_ms.to_le_bytes());
        if let Some(ttft) = row.ttft_ms {
            body.extend_from_slice(&ttft.to_le_bytes());
        }
        for count in [row.prompt_tokens, row.completion_tokens, row.cached_tokens]
            .into_iter()
            .flatten()
        {
            put_zigzag(&mut body, count);
        }
        if let Some(cost) = row.cost_usd {
            body.extend_from_slice(&cost.to_le_bytes());
        }
        put_zigzag(&mut body, row.attempts);
        put_zigzag(&mut body, row.retries);
    }
    out.clear();
    out.push(VERSION);
    put_varint(out, base_seq as u64);
    put_zigzag(out, base_ms.unwrap_or(0));
    put_varint(out, strings.list.len() as u64);
    for text in &strings.list {
        put_bytes(out, text.as_bytes());
    }
    put_varint(out, summary.rows as u64);
    out.extend_from_slice(&body);
    summary
}

/// A row's text fields stored as references to the block's strings, in stored order.
fn names(row: &RequestLogRow) -> [Option<&str>; NAMED_FIELDS] {
    [
        row.key_id.as_deref(),
        row.team.as_deref(),
        Some(&row.endpoint),
        row.model.as_deref(),
        row.provider.as_deref(),
        row.upstream_model.as_deref(),
        row.deployment.as_deref(),
        row.fallback_path.as_deref(),
        row.error.as_deref(),
    ]
}

/// A block's strings while it is encoded, each stored once.
#[derive(Default)]
struct Strings<'r> {
    index: HashMap<&'r str, u32, foldhash::fast::RandomState>,
    list: Vec<&'r str>,
    /// The last string each field referred to: rows of a batch mostly repeat their
    /// neighbours' names, and comparing with it is cheaper than hashing.
    last: [(&'r str, u32); NAMED_FIELDS],
}

impl<'r> Strings<'r> {
    /// 0 for none, else 1 + the string's index.
    fn reference(&mut self, field: usize, text: Option<&'r str>) -> u32 {
        let Some(text) = text else { return 0 };
        let (last_text, last_reference) = self.last[field];
        if last_reference != 0 && last_text == text {
            return last_reference;
        }
        let next = self.list.len() as u32 + 1;
        let list = &mut self.list;
        let reference = *self.index.entry(text).or_insert_with(|| {
            list.push(text);
            next
        });
        self.last[field] = (text, reference);
        reference
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A request-log row read from a block, borrowing its text from the block's data. The
/// request id stays bytes until the row is made owned: analytics and roll-ups never read it,
/// and checking it is UTF-8 was a good part of decoding a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowView<'a> {
    pub seq: i64,
    pub request_id: &'a [u8],
    pub created_at_ms: i64,
    pub key_id: Option<&'a str>,
    pub team: Option<&'a str>,
    pub endpoint: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub stream: bool,
    pub status: i64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cached_tokens: Option<i64>,
    pub usage_estimated: bool,
    pub cost_usd: Option<f64>,
    pub deployment: Option<&'a str>,
    pub attempts: i64,
    pub retries: i64,
    pub fallback_path: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl RowView<'_> {
    pub(crate) fn into_row(self) -> Result<RequestLogRow, CorruptBlock> {
        let text = |text: &str| LogText::from(text.to_owned());
        let request_id = std::str::from_utf8(self.request_id)
            .map_err(|_| CorruptBlock("request id is not UTF-8"))?;
        Ok(RequestLogRow {
            seq: self.seq,
            request_id: text(request_id),
            created_at_ms: self.created_at_ms,
            key_id: self.key_id.map(str::to_owned),
            team: self.team.map(text),
            endpoint: text(self.endpoint),
            model: self.model.map(str::to_owned),
            provider: self.provider.map(text),
            upstream_model: self.upstream_model.map(text),
            stream: self.stream,
            status: self.status,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            usage_estimated: self.usage_estimated,
            cost_usd: self.cost_usd,
            deployment: self.deployment.map(text),
            attempts: self.attempts,
            retries: self.retries,
            fallback_path: self.fallback_path.map(str::to_owned),
            error: self.error.map(str::to_owned),
        })
    }
}

/// The rows of one block, in seq order.
pub(crate) struct Block<'a> {
    strings: Vec<&'a str>,
    input: Cursor<'a>,
    left: u64,
    base_seq: i64,
    base_ms: i64,
}

impl<'a> Block<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Result<Block<'a>, CorruptBlock> {
        let mut input = Cursor(data);
        if input.byte()? != VERSION {
            return Err(CorruptBlock("unknown version"));
        }
        let base_seq = input.varint()? as i64;
        let base_ms = input.zigzag()?;
        let count = input.varint()?;
        // Each string takes at least a byte, so a count beyond the data is damage.
        if count > input.0.len() as u64 {
            return Err(CorruptBlock("string count"));
        }
        let mut strings = Vec::with_capacity(count as usize);
        for _ in 0..count {
            strings.push(input.text()?);
        }
        let left = input.varint()?;
        Ok(Block {
            strings,
            input,
            left,
            base_seq,
            base_ms,
        })
    }

    fn named(&self, reference: u64) -> Result<Option<&'a str>, CorruptBlock> {
        match reference {
            0 => Ok(None),
            n => self
                .strings
                .get(n as usize - 1)
                .copied()
                .map(Some)
                .ok_or(CorruptBlock("string reference")),
        }
    }

    fn row(&mut self) -> Result<RowView<'a>, CorruptBlock> {
        let seq = self.base_seq.wrapping_add(self.input.varint()? as i64);
        let created_at_ms = self.base_ms.wrapping_add(self.input.zigzag()?);
        let flags = self.input.byte()?;
        let length = self.input.varint()?;
        let request_id = self.input.take(length)?;
        let mut named = [None; NAMED_FIELDS];
        for slot in &mut named {
            let reference = self.input.varint()?;
            *slot = self.named(reference)?;
        }
        let [
            key_id,
            team,
            endpoint,
            model,
            provider,
            upstream_model,
            deployment,
            fallback_path,
            error,
        ] = named;
        let status = self.input.zigzag()?;
        let latency_ms = self.input.f64()?;
        let has = |flag: u8| flags & flag != 0;
        let ttft_ms = if has(HAS_TTFT) {
            Some(self.input.f64()?)
        } else {
            None
        };
        let mut count = |flag: u8| -> Result<Option<i64>, CorruptBlock> {
            if has(flag) {
                self.input.zigzag().map(Some)
            } else {
                Ok(None)
            }
        };
        let prompt_tokens = count(HAS_PROMPT)?;
        let completion_tokens = count(HAS_COMPLETION)?;
        let cached_tokens = count(HAS_CACHED)?;
        let cost_usd = if has(HAS_COST) {
            Some(self.input.f64()?)
        } else {
            None
        };
        Ok(RowView {
            seq,
            request_id,
            created_at_ms,
            key_id,
            team,
            endpoint: endpoint.ok_or(CorruptBlock("row without an endpoint"))?,
            model,
            provider,
            upstream_model,
            stream: has(STREAM),
            status,
            latency_ms,
            ttft_ms,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            usage_estimated: has(USAGE_ESTIMATED),
            cost_usd,
            deployment,
            attempts: self.input.zigzag()?,
            retries: self.input.zigzag()?,
            fallback_path,
            error,
        })
    }
}

impl<'a> Iterator for Block<'a> {
    type Item = Result<RowView<'a>, CorruptBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.input.0.is_empty() {
                return None;
            }
            self.input.0 = &[];
            return Some(Err(CorruptBlock("trailing bytes")));
        }
        self.left -= 1;
        let row = self.row();
        if row.is_err() {
            // Nothing after damage is trusted.
            self.left = 0;
            self.input.0 = &[];
        }
        Some(row)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, CorruptBlock> {
        let (&first, rest) = self.0.split_first().ok_or(CorruptBlock("truncated"))?;
        self.0 = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, CorruptBlock> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CorruptBlock("varint too long"))
    }

    fn zigzag(&mut self) -> Result<i64, CorruptBlock> {
        let value = self.varint()?;
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    fn take(&mut self, length: u64) -> Result<&'a [u8], CorruptBlock> {
        if length > self.0.len() as u64 {
            return Err(CorruptBlock("truncated"));
        }
        let (taken, rest) = self.0.split_at(length as usize);
        self.0 = rest;
        Ok(taken)
    }

    fn text(&mut self) -> Result<&'a str, CorruptBlock> {
        let length = self.varint()?;
        std::str::from_utf8(self.take(length)?).map_err(|_| CorruptBlock("text is not UTF-8"))
    }

    fn f64(&mut self) -> Result<f64, CorruptBlock> {
        let bytes = self.take(8)?;
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        Ok(f64::from_le_bytes(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> RequestLogRow {
        RequestLogRow {
            seq: 0,
            request_id: format!("req-{i}").into(),
            created_at_ms: 1_700_000_000_000 + (i * 7_919) % 5_000 - 2_500,
            key_id: (i % 3 != 0).then(|| format!("key-{}", i % 4)),
            team: (i % 2 == 0).then(|| "red".into()),
            endpoint: "/v1/chat/completions".into(),
            model: Some(["gpt-4o", "claude", "ünï"][(i % 3) as usize].to_owned()),
            provider: Some("openai".into()),
            upstream_model: (i % 5 == 0).then(|| "gpt-4o-2024".into()),
            stream: i % 2 == 1,
            status: [200, 429, 502, -1][(i % 4) as usize],
            latency_ms: 0.25 + i as f64,
            ttft_ms: (i % 2 == 1).then_some(1.5 * i as f64),
            prompt_tokens: (i % 7 != 0).then_some(i * 1_000_003),
            completion_tokens: (i % 6 != 0).then_some(-i),
            cached_tokens: (i % 9 == 0).then_some(i64::MAX - i),
            usage_estimated: i % 8 == 0,
            cost_usd: (i % 3 == 0).then_some(0.001 * i as f64),
            deployment: Some("openai/gpt-4o".into()),
            attempts: 1 + i % 3,
            retries: i % 3,
            fallback_path: (i % 10 == 0).then(|| "smart>cheap".to_owned()),
            error: (i % 4 == 3).then(|| format!("upstream said {}", i % 2)),
        }
    }

    fn decode(data: &[u8]) -> Vec<RequestLogRow> {
        Block::parse(data)
            .unwrap()
            .map(|row| row.unwrap().into_row().unwrap())
            .collect()
    }

    #[test]
    fn rows_come_back_as_they_went_in_with_their_seqs() {
        let rows: Vec<RequestLogRow> = (0..300).map(row).collect();
        let mut data = Vec::new();
        let summary = encode(
            41,
            rows.iter().enumerate().map(|(i, row)| (41 + i as i64, row)),
            &mut data,
        );
        assert_eq!(summary.rows, 300);
        assert_eq!(summary.last_seq, 340);
        assert_eq!(
            summary.min_created_ms,
            rows.iter().map(|r| r.created_at_ms).min().unwrap()
        );
        assert_eq!(
            summary.max_created_ms,
            rows.iter().map(|r| r.created_at_ms).max().unwrap()
        );
        let read = decode(&data);
        assert_eq!(read.len(), rows.len());
        for (i, (read, written)) in read.iter().zip(&rows).enumerate() {
            assert_eq!(read.seq, 41 + i as i64);
            assert_eq!(
                &RequestLogRow {
                    seq: 0,
                    ..read.clone()
                },
                written
            );
        }
        // Names repeated across rows are stored once: the block is smaller than the rows'
        // text alone.
        let text: usize = rows
            .iter()
            .map(|r| r.request_id.len() + names(r).iter().flatten().map(|n| n.len()).sum::<usize>())
            .sum();
        assert!(data.len() < text, "{} bytes for {text} of text", data.len());
    }

    #[test]
    fn gaps_in_seqs_survive() {
        let rows: Vec<RequestLogRow> = (0..5)
            .map(|i| RequestLogRow {
                seq: 100 + i * i,
                ..row(i)
            })
            .collect();
        let mut data = Vec::new();
        let summary = encode(90, rows.iter().map(|r| (r.seq, r)), &mut data);
        assert_eq!(summary.last_seq, 116);
        let seqs: Vec<i64> = decode(&data).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [100, 101, 104, 109, 116]);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let rows: Vec<RequestLogRow> = (0..20).map(row).collect();
        let mut data = Vec::new();
        encode(
            1,
            rows.iter().enumerate().map(|(i, r)| (1 + i as i64, r)),
            &mut data,
        );
        // Every truncation, and every single-byte change, either decodes or fails cleanly.
        for end in 0..data.len() {
            let truncated = &data[..end];
            let result: Result<Vec<_>, _> =
                Block::parse(truncated).and_then(|block| block.collect::<Result<Vec<_>, _>>());
            assert!(result.is_err(), "truncated at {end} decoded");
        }
        for at in 0..data.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut changed = data.clone();
                changed[at] = value;
                if let Ok(block) = Block::parse(&changed) {
                    for row in block {
                        let _ = row;
                    }
                }
            }
        }
        assert_eq!(
            Block::parse(&[2]).err(),
            Some(CorruptBlock("unknown version"))
        );
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(
            Block::parse(&trailing)
                .unwrap()
                .any(|row| row == Err(CorruptBlock("trailing bytes")))
        );
    }
}
