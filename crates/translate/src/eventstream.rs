//! The AWS event-stream framing (`application/vnd.amazon.eventstream`) that Bedrock's
//! `ConverseStream` answers in: each message is a 12-byte prelude (total length, headers
//! length, CRC32 of those 8 bytes), typed headers, a payload, and a CRC32 of everything
//! before it. All integers are big-endian.

/// Largest message accepted (AWS caps event-stream messages at 16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;
const TRAILER: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// String-valued headers (`:event-type`, `:message-type`, `:content-type`, ...); headers
    /// of other types are skipped.
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("event-stream prelude checksum mismatch")]
    PreludeChecksum,
    #[error("event-stream message checksum mismatch")]
    MessageChecksum,
    #[error("event-stream message of {0} bytes is out of bounds")]
    Length(usize),
    #[error("event-stream header is malformed")]
    Header,
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3), the checksum the framing uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Frames one message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + header_bytes.len() + payload.len() + TRAILER;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// Reassembles messages from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Bytes received but not yet part of a whole message.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Adds bytes and appends every message they complete to `messages`.
    pub fn push(&mut self, bytes: &[u8], messages: &mut Vec<Message>) -> Result<(), FrameError> {
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buffer[start..];
            if rest.len() < PRELUDE {
                break;
            }
            let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let headers_len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let prelude_crc = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if crc32(&rest[..8]) != prelude_crc {
                return Err(FrameError::PreludeChecksum);
            }
            if total < PRELUDE + TRAILER + headers_len || total > MAX_MESSAGE_BYTES {
                return Err(FrameError::Length(total));
            }
            if rest.len() < total {
                break;
            }
            let message = &rest[..total];
            let expected = u32::from_be_bytes([
                message[total - 4],
                message[total - 3],
                message[total - 2],
                message[total - 1],
            ]);
            if crc32(&message[..total - 4]) != expected {
                return Err(FrameError::MessageChecksum);
            }
            let headers = parse_headers(&message[PRELUDE..PRELUDE + headers_len])?;
            messages.push(Message {
                headers,
                payload: message[PRELUDE + headers_len..total - TRAILER].to_vec(),
            });
            start += total;
        }
        self.buffer.drain(..start);
        Ok(())
    }
}

fn parse_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = *bytes.first().ok_or(FrameError::Header)? as usize;
        let name = bytes.get(1..1 + name_len).ok_or(FrameError::Header)?;
        let kind = *bytes.get(1 + name_len).ok_or(FrameError::Header)?;
        let rest = &bytes[2 + name_len..];
        let (value, used) = match kind {
            0 | 1 => (None, 0),
            2 => (None, 1),
            3 => (None, 2),
            4 => (None, 4),
            5 | 8 => (None, 8),
            9 => (None, 16),
            6 | 7 => {
                let len = u16::from_be_bytes([
                    *rest.first().ok_or(FrameError::Header)?,
                    *rest.get(1).ok_or(FrameError::Header)?,
                ]) as usize;
                let value = rest.get(2..2 + len).ok_or(FrameError::Header)?;
                (
                    (kind == 7).then(|| String::from_utf8_lossy(value).into_owned()),
                    2 + len,
                )
            }
            _ => return Err(FrameError::Header),
        };
        if rest.len() < used {
            return Err(FrameError::Header);
        }
        if let Some(value) = value {
            headers.push((String::from_utf8_lossy(name).into_owned(), value));
        }
        bytes = &rest[used..];
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 "check" value from the catalogue of parametrised CRC algorithms.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn messages_round_trip_across_any_split() {
        let first = encode(
            &[
                (":event-type", "contentBlockDelta"),
                (":message-type", "event"),
            ],
            br#"{"delta":{"text":"hi"}}"#,
        );
        let second = encode(
            &[(":event-type", "messageStop")],
            br#"{"stopReason":"end_turn"}"#,
        );
        let wire = [first, second].concat();
        for piece in 1..wire.len() {
            let mut decoder = Decoder::new();
            let mut messages = Vec::new();
            for chunk in wire.chunks(piece) {
                decoder.push(chunk, &mut messages).unwrap();
            }
            assert_eq!(messages.len(), 2, "piece {piece}");
            assert_eq!(messages[0].header(":event-type"), Some("contentBlockDelta"));
            assert_eq!(messages[1].payload, br#"{"stopReason":"end_turn"}"#);
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let mut wire = encode(&[(":event-type", "x")], b"{}");
        let last = wire.len() - 6;
        wire[last] ^= 1;
        let mut messages = Vec::new();
        assert_eq!(
            Decoder::new().push(&wire, &mut messages),
            Err(FrameError::MessageChecksum)
        );
        let mut wire = encode(&[], b"{}");
        wire[1] ^= 1;
        assert_eq!(
            Decoder::new().push(&wire, &mut messages),
            Err(FrameError::PreludeChecksum)
        );
    }
}
