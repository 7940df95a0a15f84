//! Feeds the decoder every file of the malformed-input corpus (also the fuzz
//! target's seed corpus) and checks it answers with an error, never a panic
//! and never a frame.

use std::path::PathBuf;

use tunnel::codec::{self, FrameError};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_malformed_input_is_an_error() {
    let files = corpus();
    // A walk that silently finds nothing would pass vacuously.
    assert!(files.len() >= 10, "corpus has only {} files", files.len());
    for (name, bytes) in files {
        let want = expected(&name);
        match codec::decode(&bytes) {
            Err(e) => {
                if let Some(want) = want {
                    assert!(want(&e), "{name}: unexpected error {e:?}");
                }
            }
            Ok(other) => panic!("{name}: decoded to {other:?}, expected an error"),
        }
    }
}

/// The file name says which error is expected.
fn expected(name: &str) -> Option<fn(&FrameError) -> bool> {
    let prefix = name.split('-').next().unwrap_or_default();
    Some(match prefix {
        "version" => |e| matches!(e, FrameError::UnsupportedVersion(_)),
        "type" => |e| matches!(e, FrameError::UnknownType(_)),
        "oversized" => |e| matches!(e, FrameError::TooLarge(_)),
        "truncated" => |e| matches!(e, FrameError::Truncated),
        "trailing" => |e| matches!(e, FrameError::TrailingBytes(_)),
        "utf8" => |e| matches!(e, FrameError::InvalidUtf8(_)),
        "field" => |e| matches!(e, FrameError::InvalidField(_)),
        "headers" => |e| matches!(e, FrameError::TooManyHeaders(_)),
        _ => return None,
    })
}
