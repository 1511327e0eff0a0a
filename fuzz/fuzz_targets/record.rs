//! One record, in log form and in netlink form: parsing, every field, every
//! value decoding. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mapwatch::audit::record::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::parse_log_line(data) {
        exercise(&record);
    }
    if let [a, b, text @ ..] = data
        && let Ok(record) = Record::parse_netlink(u16::from_le_bytes([*a, *b]), text)
    {
        exercise(&record);
    }
});

fn exercise(record: &Record<'_>) {
    let mut out = Vec::new();
    for (_, value) in record.fields() {
        let _ = value.untrusted();
        let _ = value.decimal::<u64>();
        let _ = value.hex_u32();
        out.clear();
        let _ = value.untrusted_into(&mut out);
    }
}
