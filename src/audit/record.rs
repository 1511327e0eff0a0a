//! One audit record line -> [`Record`]: its type, its event id and a zero-copy
//! iterator over its `key=value` fields.
//!
//! Contract: parsing borrows the input and never allocates or panics, whatever
//! the bytes. Two framings are accepted: the log form
//! (`[node=N ]type=NAME msg=audit(SEC.MSEC:SERIAL): k=v ...`) and the netlink
//! form (type from the netlink header, text starting at `audit(`). auditd's
//! ENRICHED format appends `\x1d`-separated translations: kept apart
//! ([`Record::enrichment`]), never mixed with the kernel's fields.
//! Values stay raw until a consumer asks for them as numbers or as
//! attacker-controlled strings ([`Value::untrusted`]).

use std::borrow::Cow;

use memchr::memchr;
use std::fmt;

/// The numeric audit record type (`AUDIT_*` in `linux/audit.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RecordType(pub u16);

impl RecordType {
    pub const LOGIN: Self = Self(1006);
    pub const USER_START: Self = Self(1105);
    pub const SYSCALL: Self = Self(1300);
    pub const PATH: Self = Self(1302);
    pub const CONFIG_CHANGE: Self = Self(1305);
    pub const CWD: Self = Self(1307);
    pub const EXECVE: Self = Self(1309);
    pub const EOE: Self = Self(1320);
    pub const OBJ_PID: Self = Self(1318);
    pub const PROCTITLE: Self = Self(1327);
    pub const REPLACE: Self = Self(1329);

    /// Names auditd writes in logs; `UNKNOWN[N]` covers the rest.
    const NAMES: [(&'static [u8], RecordType); 11] = [
        (b"SYSCALL", Self::SYSCALL),
        (b"PATH", Self::PATH),
        (b"CONFIG_CHANGE", Self::CONFIG_CHANGE),
        (b"CWD", Self::CWD),
        (b"EXECVE", Self::EXECVE),
        (b"EOE", Self::EOE),
        (b"OBJ_PID", Self::OBJ_PID),
        (b"PROCTITLE", Self::PROCTITLE),
        (b"REPLACE", Self::REPLACE),
        (b"LOGIN", Self::LOGIN),
        (b"USER_START", Self::USER_START),
    ];

    /// Parses a log-form type name. Names this crate never uses map to
    /// [`RecordType::OTHER`]: they are valid records, just not ours.
    pub fn from_name(name: &[u8]) -> Self {
        if let Some(num) = name
            .strip_prefix(b"UNKNOWN[")
            .and_then(|rest| rest.strip_suffix(b"]"))
        {
            return parse_decimal::<u16>(num).map_or(Self::OTHER, Self);
        }
        if name.starts_with(b"DAEMON_") {
            return Self::DAEMON;
        }
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Self::OTHER, |(_, t)| *t)
    }

    /// A record type mapwatch does not interpret.
    pub const OTHER: Self = Self(0);

    /// The first of auditd's own records (`AUDIT_FIRST_DAEMON`); every
    /// `DAEMON_*` name parses to it.
    pub const DAEMON: Self = Self(1200);

    /// auditd's own records (`DAEMON_START`...), numbered by auditd, not by
    /// the kernel's serial counter.
    pub fn is_from_audit_daemon(self) -> bool {
        (1200..=1299).contains(&self.0)
    }
}

/// Event time as the kernel stamps it: seconds and milliseconds since the epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AuditTimestamp {
    pub secs: u64,
    pub millis: u16,
}

/// The kernel's per-boot event serial number (wraps at u32 in practice).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Serial(pub u64);

impl Serial {
    /// Whether the kernel numbered this event no later than `other`: serials
    /// are taken as events end, from one 32-bit counter, so the comparison
    /// wraps as [`crate::audit::serial`] does.
    pub fn is_not_after(self, other: Serial) -> bool {
        (other.0 as u32).wrapping_sub(self.0 as u32) as i32 >= 0
    }
}

/// What ties the records of one event together.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventId {
    pub timestamp: AuditTimestamp,
    pub serial: Serial,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:03}:{}",
            self.timestamp.secs, self.timestamp.millis, self.serial.0
        )
    }
}

/// Why a line is not an audit record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseError {
    MissingType,
    MissingHeader,
    BadTimestamp,
    BadSerial,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::MissingType => "no `type=` before the header",
            ParseError::MissingHeader => "no `audit(SEC.MSEC:SERIAL):` header",
            ParseError::BadTimestamp => "timestamp is not SEC.MSEC",
            ParseError::BadSerial => "serial is not a number",
        })
    }
}

impl std::error::Error for ParseError {}

/// One audit record, borrowing the line it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub rtype: RecordType,
    pub id: EventId,
    body: &'a [u8],
    /// auditd's translations of an ENRICHED log line; empty otherwise.
    enrichment: &'a [u8],
}

impl<'a> Record<'a> {
    /// Parses the log form written by auditd (raw or enriched).
    pub fn parse_log_line(line: &'a [u8]) -> Result<Self, ParseError> {
        let mut rest = trim_line_end(line);
        if rest.starts_with(b"node=") {
            let end = memchr(b' ', rest).ok_or(ParseError::MissingType)?;
            rest = &rest[end + 1..];
        }
        let rest = rest.strip_prefix(b"type=").ok_or(ParseError::MissingType)?;
        let end = memchr(b' ', rest).ok_or(ParseError::MissingHeader)?;
        let rtype = RecordType::from_name(&rest[..end]);
        let header = rest[end + 1..]
            .strip_prefix(b"msg=")
            .ok_or(ParseError::MissingHeader)?;
        let record = Self::parse_header(rtype, header)?;
        // ENRICHED logs: everything after the first GS byte is auditd's
        // translation. The kernel never writes one (it hex-encodes any
        // value holding a control byte), so netlink records skip this scan.
        let (body, enrichment) = match memchr(0x1d, record.body) {
            Some(gs) => (&record.body[..gs], &record.body[gs + 1..]),
            None => (record.body, &record.body[..0]),
        };
        Ok(Record {
            body,
            enrichment,
            ..record
        })
    }

    /// Parses the netlink form: the type comes from `nlmsg_type`.
    pub fn parse_netlink(rtype: u16, text: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_header(RecordType(rtype), trim_line_end(text))
    }

    fn parse_header(rtype: RecordType, text: &'a [u8]) -> Result<Self, ParseError> {
        let inner = text
            .strip_prefix(b"audit(")
            .ok_or(ParseError::MissingHeader)?;
        let (id, body) = match well_formed_header(inner) {
            Some(parsed) => parsed,
            None => header_with_error(inner)?,
        };
        Ok(Record {
            rtype,
            id,
            body,
            enrichment: &body[..0],
        })
    }
    /// The `key=value` fields in order of appearance.
    pub fn fields(&self) -> Fields<'a> {
        Fields { rest: self.body }
    }

    /// The first field named `key`.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The fields auditd added to an ENRICHED line (`UID="root" ...`, its
    /// lookups on the host that wrote it); none for other lines.
    pub fn enrichment(&self) -> Fields<'a> {
        Fields {
            rest: self.enrichment,
        }
    }
}

/// `SEC.MSEC:SERIAL):` and the body after it, in one pass over the digits:
/// how the kernel always writes it. `None` on anything else, which
/// [`header_with_error`] then explains.
fn well_formed_header(inner: &[u8]) -> Option<(EventId, &[u8])> {
    let (secs, rest) = leading_decimal(inner, b'.')?;
    let (millis, rest) = leading_decimal(rest, b':')?;
    let (serial, rest) = leading_decimal(rest, b')')?;
    let body = rest.strip_prefix(b":")?;
    let millis = u16::try_from(millis).ok().filter(|m| *m < 1000)?;
    let id = EventId {
        timestamp: AuditTimestamp { secs, millis },
        serial: Serial(serial),
    };
    Some((id, body))
}

/// The decimal number at the start of `text`, up to `end` (consumed). At
/// most 19 digits, which no u64 arithmetic can overflow; longer numbers
/// are left to [`header_with_error`].
fn leading_decimal(text: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    let mut len = 0;
    while let Some(&byte) = text.get(len) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if len == 19 {
            return None;
        }
        value = value * 10 + u64::from(digit);
        len += 1;
    }
    (len > 0 && text.get(len) == Some(&end)).then(|| (value, &text[len + 1..]))
}

/// The header taken apart piece by piece, to say what is wrong with it.
fn header_with_error(inner: &[u8]) -> Result<(EventId, &[u8]), ParseError> {
    let close = memchr(b')', inner).ok_or(ParseError::MissingHeader)?;
    let (stamp, after) = (&inner[..close], &inner[close + 1..]);
    let colon = memchr(b':', stamp).ok_or(ParseError::MissingHeader)?;
    let (time, serial) = (&stamp[..colon], &stamp[colon + 1..]);
    let dot = memchr(b'.', time).ok_or(ParseError::BadTimestamp)?;
    let secs = parse_decimal::<u64>(&time[..dot]).ok_or(ParseError::BadTimestamp)?;
    let millis = parse_decimal::<u16>(&time[dot + 1..])
        .filter(|m| *m < 1000)
        .ok_or(ParseError::BadTimestamp)?;
    let serial = parse_decimal::<u64>(serial).ok_or(ParseError::BadSerial)?;
    let body = after.strip_prefix(b":").ok_or(ParseError::MissingHeader)?;
    let id = EventId {
        timestamp: AuditTimestamp { secs, millis },
        serial: Serial(serial),
    };
    Ok((id, body))
}

/// Iterator over a record's fields. Tokens without `=` (free text in some
/// record types, e.g. AVC's `{ read }`) are skipped.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], Value<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = self.rest.iter().position(|b| *b != b' ')?;
            let token = &self.rest[start..];
            // One scan finds the key's end, or the end of a token without `=`.
            // Keys are a few bytes: a plain loop beats a SIMD search here.
            let Some(at) = token.iter().position(|b| *b == b'=' || *b == b' ') else {
                self.rest = &[];
                return None;
            };
            if token[at] == b' ' {
                self.rest = &token[at..];
                continue;
            }
            let key = &token[..at];
            let raw = &token[at + 1..];
            let (value, consumed) = match raw.first() {
                Some(q @ (b'"' | b'\'')) => {
                    let inner = &raw[1..];
                    match memchr(*q, inner) {
                        Some(close) => (Value::Quoted(&inner[..close]), close + 2),
                        // An unterminated quote runs to the end of the record.
                        None => (Value::Quoted(inner), raw.len()),
                    }
                }
                _ => {
                    let end = raw.iter().position(|b| *b == b' ').unwrap_or(raw.len());
                    (Value::Bare(&raw[..end]), end)
                }
            };
            self.rest = &raw[consumed..];
            return Some((key, value));
        }
    }
}

/// A field value as written by the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Value<'a> {
    /// `key="text"`: the text is literal.
    Quoted(&'a [u8]),
    /// `key=text`: a number, a symbolic value, or hex-encoded bytes.
    Bare(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The bytes as they appear, without quotes.
    pub fn raw(&self) -> &'a [u8] {
        match self {
            Value::Quoted(b) | Value::Bare(b) => b,
        }
    }

    /// `(null)` and `?` mean the kernel had no value.
    pub fn is_absent(&self) -> bool {
        matches!(self, Value::Bare(b"(null)") | Value::Bare(b"?"))
    }

    /// A decimal number (`pid=42`).
    pub fn decimal<T: TryFrom<u64>>(&self) -> Option<T> {
        match self {
            Value::Bare(b) => parse_decimal(b),
            Value::Quoted(_) => None,
        }
    }

    /// A hexadecimal number (`arch=c000003e`).
    pub fn hex_u32(&self) -> Option<u32> {
        match self {
            Value::Bare(b) if !b.is_empty() && b.len() <= 8 => b
                .iter()
                .try_fold(0u32, |acc, d| Some(acc << 4 | u32::from(hex_digit(*d)?))),
            Value::Bare(_) => None,
            Value::Quoted(_) => None,
        }
    }

    /// A hexadecimal register value (`a2=5596efca4000`), 64 bits.
    pub fn hex_u64(&self) -> Option<u64> {
        match self {
            Value::Bare(b) if !b.is_empty() && b.len() <= 16 => b
                .iter()
                .try_fold(0u64, |acc, d| Some(acc << 4 | u64::from(hex_digit(*d)?))),
            Value::Bare(_) | Value::Quoted(_) => None,
        }
    }

    /// An attacker-controlled string (argv, comm, exe, paths): quoted text is
    /// literal, unquoted text is hex-encoded bytes. `None` when absent.
    /// Unquoted text that is not valid hex is kept as it is rather than lost.
    pub fn untrusted(&self) -> Option<Cow<'a, [u8]>> {
        if self.is_absent() {
            return None;
        }
        Some(match self {
            Value::Quoted(b) => Cow::Borrowed(*b),
            Value::Bare(b) => match decode_hex(b) {
                Some(bytes) => Cow::Owned(bytes),
                None => Cow::Borrowed(*b),
            },
        })
    }

    /// Like [`Value::untrusted`], appending to `out` without an intermediate
    /// allocation. Returns false when the value is absent.
    pub fn untrusted_into(&self, out: &mut Vec<u8>) -> bool {
        if self.is_absent() {
            return false;
        }
        match self {
            Value::Quoted(b) => out.extend_from_slice(b),
            Value::Bare(b) => {
                if !decode_hex_into(b, out) {
                    out.extend_from_slice(b);
                }
            }
        }
        true
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex pairs; `None` if `hex` is not entirely valid hex of even length.
pub fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(hex.len() / 2);
    decode_hex_into(hex, &mut out).then_some(out)
}

/// Appends the decoded bytes to `out`; on invalid input `out` is left unchanged.
pub fn decode_hex_into(hex: &[u8], out: &mut Vec<u8>) -> bool {
    if !hex.len().is_multiple_of(2) || !hex.iter().all(|b| hex_digit(*b).is_some()) {
        return false;
    }
    out.extend(hex.chunks_exact(2).map(|pair| {
        let hi = hex_digit(pair[0]).unwrap_or(0);
        let lo = hex_digit(pair[1]).unwrap_or(0);
        hi << 4 | lo
    }));
    true
}

/// ASCII digits only (no sign, no spaces); `None` on overflow of `T`.
pub(crate) fn parse_decimal<T: TryFrom<u64>>(b: &[u8]) -> Option<T> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for digit in b {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    T::try_from(value).ok()
}

fn trim_line_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | 0] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_line_with_node_prefix() {
        let line = b"node=work type=EXECVE msg=audit(1615114232.375:15558): argc=1 a0=\"whoami\"\n";
        let r = Record::parse_log_line(line).expect("parses");
        assert_eq!(r.rtype, RecordType::EXECVE);
        assert_eq!(
            r.id.timestamp,
            AuditTimestamp {
                secs: 1615114232,
                millis: 375
            }
        );
        assert_eq!(r.id.serial, Serial(15558));
        assert_eq!(r.get(b"argc").and_then(|v| v.decimal::<u32>()), Some(1));
        assert_eq!(
            r.get(b"a0").and_then(|v| v.untrusted()).as_deref(),
            Some(&b"whoami"[..])
        );
    }

    #[test]
    fn parses_netlink_form_and_trailing_nul() {
        let r = Record::parse_netlink(1320, b"audit(1700000000.001:7): \0").expect("parses");
        assert_eq!(r.rtype, RecordType::EOE);
        assert_eq!(r.fields().count(), 0);
    }

    #[test]
    fn eoe_without_body_parses() {
        let r = Record::parse_log_line(b"type=EOE msg=audit(1.002:3):").expect("parses");
        assert_eq!(r.id.serial, Serial(3));
    }

    #[test]
    fn enriched_suffix_is_ignored() {
        let line = b"type=SYSCALL msg=audit(1.000:2): arch=c000003e key=(null)\x1dARCH=x86_64 AUID=\"user\"";
        let r = Record::parse_log_line(line).expect("parses");
        let keys: Vec<_> = r.fields().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"arch".to_vec(), b"key".to_vec()]);
        assert!(r.get(b"key").is_some_and(|v| v.is_absent()));
        assert_eq!(r.get(b"arch").and_then(|v| v.hex_u32()), Some(0xc000003e));
    }

    #[test]
    fn hex_values_decode_to_bytes_including_non_utf8() {
        let r = Record::parse_log_line(
            b"type=EXECVE msg=audit(1.000:2): argc=2 a0=\"cat\" a1=2F746D702F61FF0A62",
        )
        .expect("parses");
        assert_eq!(
            r.get(b"a1").and_then(|v| v.untrusted()).as_deref(),
            Some(&b"/tmp/a\xff\nb"[..])
        );
    }

    #[test]
    fn absent_values() {
        assert!(Value::Bare(b"(null)").untrusted().is_none());
        assert!(Value::Bare(b"?").untrusted().is_none());
        assert_eq!(Value::Quoted(b"?").untrusted().as_deref(), Some(&b"?"[..]));
    }

    #[test]
    fn invalid_hex_is_kept_raw() {
        assert_eq!(
            Value::Bare(b"xyz").untrusted().as_deref(),
            Some(&b"xyz"[..])
        );
        assert_eq!(
            Value::Bare(b"abc").untrusted().as_deref(),
            Some(&b"abc"[..])
        );
    }

    #[test]
    fn single_quoted_user_messages_do_not_split() {
        let line = b"type=USER_ACCT msg=audit(1.000:2): pid=1 uid=0 msg='op=PAM:accounting grantors=pam_permit acct=\"root\" res=success' extra=1";
        let r = Record::parse_log_line(line).expect("parses");
        assert_eq!(r.rtype, RecordType::OTHER);
        assert_eq!(r.get(b"extra").map(|v| v.raw()), Some(&b"1"[..]));
    }

    #[test]
    fn unknown_numeric_type() {
        let r =
            Record::parse_log_line(b"type=UNKNOWN[1334] msg=audit(1.000:2): x=1").expect("parses");
        assert_eq!(r.rtype, RecordType(1334));
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let cases: [&[u8]; 9] = [
            b"",
            b"garbage",
            b"type=SYSCALL",
            b"type=SYSCALL msg=audit(",
            b"type=SYSCALL msg=audit(1:2): x=1",
            b"type=SYSCALL msg=audit(1.5000:2): x=1",
            b"type=SYSCALL msg=audit(1.500:): x=1",
            b"type=SYSCALL msg=audit(1.500:2) x=1",
            b"node= type=SYSCALL msg=audit(99999999999999999999.1:2):",
        ];
        for case in cases {
            assert!(
                Record::parse_log_line(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn one_pass_header_agrees_with_the_piece_by_piece_parse() {
        let cases: [&[u8]; 14] = [
            b"1700000000.100:42): x=1",
            b"0.000:0):",
            b"18446744073709551615.999:18446744073709551615): x",
            b"18446744073709551616.999:1): x",
            b"1.1000:2): x",
            b"1.:2): x",
            b".1:2): x",
            b"1.1:): x",
            b"1.1:2) x",
            b"1.1:2x): x",
            b"1:2.3): x",
            b"1.2.3:4): x",
            b"1.2:3:4): x",
            b"1.2:3)): x",
        ];
        // The one-pass parse may leave a header to the general one (20-digit
        // numbers, errors), never disagree with it.
        for case in cases {
            if let Some(fast) = well_formed_header(case) {
                assert_eq!(
                    Ok(fast),
                    header_with_error(case),
                    "{:?}",
                    String::from_utf8_lossy(case)
                );
            }
        }
        assert!(well_formed_header(cases[0]).is_some());
        assert!(well_formed_header(b"9999999999999999999.999:9999999999999999999): x").is_some());
    }

    #[test]
    fn unterminated_quote_runs_to_end() {
        let r =
            Record::parse_log_line(b"type=CWD msg=audit(1.000:2): cwd=\"/tmp x").expect("parses");
        assert_eq!(r.get(b"cwd").map(|v| v.raw()), Some(&b"/tmp x"[..]));
    }
}
