//! The whole detector over an arbitrary sequence of log lines, as `mapwatch
//! replay` runs it: assembly (interleaving, missing ends, evictions), the
//! history process table, the shipped rules, leaders and alert documents.
//! Must never panic; every alert must be one serialisable document.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mapwatch::config::Config;
use mapwatch::detector::Detector;
use mapwatch::rule::RuleSet;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let mut config = Config::default();
    // Small bounds, so evictions and capacity limits are reached.
    config.audit.max_events_in_flight = 8;
    config.process.table_capacity = 32;
    // The shipped rules only, whatever this machine's rules.d holds.
    config.rules.directories.clear();
    config
});
static RULES: LazyLock<RuleSet> =
    LazyLock::new(|| CONFIG.load_rules().expect("shipped rules load"));

fuzz_target!(|data: &[u8]| {
    let mut detector = Detector::for_recorded_log(&CONFIG, RULES.clone(), false);
    let start = Instant::now();
    let mut emit = |alert: mapwatch::alert::Alert| {
        serde_json::to_vec(&alert.document).expect("an alert serialises");
    };
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let now = start + Duration::from_millis(i as u64 * 50);
        detector.on_log_line(line, now, &mut emit);
        if i % 16 == 0 {
            detector.on_tick(now, &mut emit);
        }
    }
    detector.flush(&mut emit);
});
