//! EXECVE reassembly: arbitrary EXECVE record bodies (argc, aN, aN[i],
//! aN_len, quoted/hex/absent values) of one event, in any order. Must never
//! panic, and never produce more arguments than its input could describe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mapwatch::audit::execve::ArgvBuilder;
use mapwatch::audit::record::Record;

fuzz_target!(|data: &[u8]| {
    let mut builder = ArgvBuilder::default();
    let mut line = Vec::new();
    for body in data.split(|b| *b == b'\n') {
        line.clear();
        line.extend_from_slice(b"type=EXECVE msg=audit(1700000000.000:1): ");
        line.extend_from_slice(body);
        if let Ok(record) = Record::parse_log_line(&line) {
            builder.add_record(&record);
        }
    }
    let (argv, _) = builder.finish();
    assert!(argv.byte_len() <= data.len() * 2 + 1, "argv larger than its input");
    for arg in argv.iter() {
        let _ = arg.len();
    }
});
