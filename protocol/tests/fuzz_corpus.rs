//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run, so the stable test suite covers every
//! input the fuzzer found interesting.

use std::fs;
use std::path::PathBuf;

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", checks::frame_decode);
}

#[test]
fn message_decode_corpus() {
    replay("message_decode", checks::message_decode);
}

#[test]
fn stream_split_corpus() {
    replay("stream_split", checks::stream_split);
}

#[test]
fn roundtrip_corpus() {
    replay("roundtrip", checks::roundtrip);
}
