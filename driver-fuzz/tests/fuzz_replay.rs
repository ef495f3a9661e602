//! The stable-toolchain fuzz run, part of `cargo test`: every fuzz body on every kept
//! corpus input (`fuzz/corpus/<target>/`) and regression input
//! (`fuzz/regressions/<target>/`), then on a fixed number of seeded random mutations
//! of them (see `driver_fuzz::mutate`). The same bodies run under libFuzzer with
//! `scripts/fuzz.sh`; see docs/fuzzing.md.
//!
//! `DRIVER_FUZZ_CASES` changes the number of random cases per target (default
//! [`CASES`]), `DRIVER_FUZZ_SEED` the seed (default: fixed, so every run checks the
//! same inputs).

use std::path::{Path, PathBuf};

use driver_fuzz::{TARGETS, mutate};

/// Random cases per target: the whole test stays well under a minute on two cores.
const CASES: usize = 50_000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a whole number")),
        Err(_) => default,
    }
}

#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{name} holds {} inputs; keep a few dozen realistic ones",
            corpus.len()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] `{name}`"
        );
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            source.contains(&format!("driver_fuzz::body(\"{name}\")")),
            "fuzz_targets/{name}.rs does not call the shared body"
        );
    }
}

#[test]
fn corpora_regressions_and_random_inputs() {
    let cases = env_number("DRIVER_FUZZ_CASES", CASES as u64) as usize;
    let seed = env_number("DRIVER_FUZZ_SEED", 0x5eed_d7a1);
    for (i, (name, body)) in TARGETS.iter().enumerate() {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for (path, input) in corpus.iter().chain(&regressions) {
            mutate::check(name, *body, input, &path.display().to_string());
        }
        let seeds: Vec<Vec<u8>> = corpus
            .into_iter()
            .chain(regressions)
            .map(|(_, bytes)| bytes)
            .collect();
        mutate::run(name, *body, &seeds, cases, seed.wrapping_add(i as u64));
    }
}
