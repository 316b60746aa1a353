//! Fuzz target: arbitrary bytes as a Jetstream frame, through the decoder and, when they
//! decode to a commit, through every verifier check and the CID recompute; and the raw bytes
//! straight into the DAG-CBOR encoder. Nothing may panic, whatever the input.
//!
//! Run (see README "Fuzzing"): `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_verify -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use actors::jetstream::decode::{Decoded, decode_frame};
use actors::messages::Item;
use actors::verifier::pool::Setup;
use actors::verifier::{VerifierConfig, record_cid};
use libfuzzer_sys::fuzz_target;

static SETUP: OnceLock<Setup> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let setup = SETUP.get_or_init(|| Setup::new(VerifierConfig::default()).expect("default config is valid"));
    if let Decoded::Event(e) = decode_frame(data) {
        let _ = setup.process(Item::Event(e));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = record_cid(text);
    }
});
