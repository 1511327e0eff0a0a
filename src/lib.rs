//! mapwatch: real-time detection of processes reading another process's
//! memory map (`/proc/<pid>/maps`), the reconnaissance before code injection
//! (MITRE ATT&CK T1057).
//!
//! Data flow (see ARCHITECTURE.md): [`source`] reads kernel audit records,
//! [`audit`] turns them into exec events, [`process`] places each event in
//! its process tree, [`rule`] decides, [`alert`] builds the ECS document and
//! [`sink`] delivers it. [`pipeline`] wires them together for live
//! sources; [`replay`] runs the same detector over recorded logs.

pub mod alert;
pub mod audit;
pub mod config;
pub mod correlate;
pub mod detector;
pub mod diagnostics;
pub mod maps;
pub mod pipeline;
pub mod privileges;
pub mod process;
pub mod replay;
pub mod rule;
pub mod sink;
pub mod source;
