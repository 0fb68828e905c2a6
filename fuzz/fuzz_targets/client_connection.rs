//! A client-side `Connection` driven by fuzzer-chosen peer bytes, frames,
//! sends, pings, closes and clock steps; see `common/conn.rs` for the
//! invariants checked.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wsloop::protocol::Role;

fuzz_target!(|data: &[u8]| common::conn::run(data, Role::Client));
