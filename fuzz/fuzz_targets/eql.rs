//! The EQL parser on arbitrary text: a query compiles or is refused with an
//! error whose byte offset lies inside the text. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mapwatch::rule::eql::{parse_condition, parse_query};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_query(text) {
        assert!(e.offset <= text.len(), "error offset {} past the end", e.offset);
    }
    let _ = parse_condition(text);
});
