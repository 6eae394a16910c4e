//! Visit rows in ClickHouse's RowBinary format, the insert body the exporter sends:
//! each column's value in the order of [`VISIT_INSERT_COLUMNS`], little-endian
//! numbers, strings as a LEB128 length and the bytes, `Nullable` as a 0/1 byte then
//! the value, `Array` as a LEB128 count then the items. ClickHouse reads this without
//! parsing text, and SafeGate writes it without escaping: the benchmark's drain was
//! bound by JSONEachRow on both sides (benches/README.md, "Export").

use safegate_store::{IdentifiedBy, Outcome, RecordRef, SeenAs};

/// The columns a RowBinary insert names, in the order [`write_visit`] writes them
/// (named in the insert, so a table with more columns takes it too).
pub const VISIT_INSERT_COLUMNS: &str = "id, school, at, at_micros, user, role, user_group, \
    client, computer, identified_by, method, scheme, host, port, path, categories, outcome, \
    rule, status, bytes_up, bytes_down, duration_micros, search_engine, search_terms, seen_as, \
    user_agent, failure, content_score, content_categories";

/// Appends one visit row: `id` (the row id), `school`, then the record's columns.
pub fn write_visit(out: &mut Vec<u8>, id: &str, school: &str, record: &RecordRef<'_>) {
    string(out, id);
    string(out, school);
    let seconds = u32::try_from(record.at_unix_micros / 1_000_000).unwrap_or(u32::MAX);
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&record.at_unix_micros.to_le_bytes());
    nullable(out, record.user);
    string(out, record.role);
    nullable(out, record.group);
    // An address is at most 39 bytes of text: formatted in place, no allocation.
    let mut client = [0u8; 48];
    string(out, address_text(&record.client, &mut client));
    nullable(out, record.computer);
    string(out, identified_by(record.identified_by));
    string(out, record.method);
    string(out, record.scheme);
    string(out, record.host);
    out.extend_from_slice(&record.port.to_le_bytes());
    nullable(out, record.path);
    leb128(out, record.categories.iter().count() as u64);
    for category in record.categories.iter() {
        string(out, category);
    }
    string(out, outcome(record.outcome));
    string(out, record.rule);
    out.extend_from_slice(&record.status.to_le_bytes());
    out.extend_from_slice(&record.bytes_up.to_le_bytes());
    out.extend_from_slice(&record.bytes_down.to_le_bytes());
    out.extend_from_slice(&record.duration_micros.to_le_bytes());
    nullable(out, record.search.map(|s| s.engine));
    nullable(out, record.search.map(|s| s.terms));
    string(out, seen_as(record.seen_as));
    nullable(out, record.user_agent);
    nullable(out, record.failure);
    match &record.content {
        Some(content) => {
            out.push(0);
            out.extend_from_slice(&content_score(content.score).to_le_bytes());
            leb128(out, content.categories.len() as u64);
            for (name, _) in &content.categories {
                string(out, name);
            }
        }
        None => {
            out.push(1);
            leb128(out, 0);
        }
    }
}

/// The address as text in `buffer` (IPv4 dotted, IPv6 as `Display` writes it).
fn address_text<'b>(address: &std::net::IpAddr, buffer: &'b mut [u8; 48]) -> &'b str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    // 48 bytes hold any address's text; a failure would leave it short, never wrong.
    let _ = write!(cursor, "{address}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buffer[..len]).unwrap_or_default()
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, text: &str) {
    leb128(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn nullable(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            out.push(0);
            string(out, text);
        }
        None => out.push(1),
    }
}

/// The names serde gives these (the JSON rows and the report read them back).
fn identified_by(value: IdentifiedBy) -> &'static str {
    match value {
        IdentifiedBy::Default => "Default",
        IdentifiedBy::Address => "Address",
        IdentifiedBy::ProxyAuth => "ProxyAuth",
        IdentifiedBy::Portal => "Portal",
    }
}

fn outcome(value: Outcome) -> &'static str {
    match value {
        Outcome::Allowed => "Allowed",
        Outcome::Blocked => "Blocked",
        Outcome::Failed => "Failed",
    }
}

fn seen_as(value: SeenAs) -> &'static str {
    match value {
        SeenAs::PlainHttp => "PlainHttp",
        SeenAs::ConnectHost => "ConnectHost",
        SeenAs::Decrypted => "Decrypted",
    }
}

/// A content score as the table's `UInt32` (a negative score, from negative weights,
/// is 0).
pub fn content_score(score: i64) -> u32 {
    u32::try_from(score.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json<T: serde::Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn enum_names_are_serdes() {
        for value in [
            IdentifiedBy::Default,
            IdentifiedBy::Address,
            IdentifiedBy::ProxyAuth,
            IdentifiedBy::Portal,
        ] {
            assert_eq!(json(&value), format!("\"{}\"", identified_by(value)));
        }
        for value in [Outcome::Allowed, Outcome::Blocked, Outcome::Failed] {
            assert_eq!(json(&value), format!("\"{}\"", outcome(value)));
        }
        for value in [SeenAs::PlainHttp, SeenAs::ConnectHost, SeenAs::Decrypted] {
            assert_eq!(json(&value), format!("\"{}\"", seen_as(value)));
        }
    }

    #[test]
    fn lengths_are_leb128_and_addresses_are_text() {
        let mut out = Vec::new();
        leb128(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        let mut buffer = [0u8; 48];
        let v6: std::net::IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(address_text(&v6, &mut buffer), v6.to_string());
        let v4: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(address_text(&v4, &mut buffer), "127.0.0.2");
    }
}
