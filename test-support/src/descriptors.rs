//! Running a test process out of file descriptors: [`fill_descriptors`].
//!
//! For tests of what a connect does on `EMFILE` (`dtmdriver_core::open_files`). It
//! changes the whole process's limits, so a test that calls it should be alone in its
//! test binary.

use std::fs::File;

use rlimit::Resource;

/// Descriptors open in this process now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// Sets this process's soft open-file limit a few descriptors above those open (the
/// hard limit too, for good, if `hard_too`), then opens `/dev/null` until the process
/// is out of descriptors; the files that fill the table, to drop to free them.
///
/// # Panics
///
/// If the limits cannot be set, a failure to open is not `EMFILE`, or 64 files open
/// under the new limit.
pub fn fill_descriptors(hard_too: bool) -> Vec<File> {
    let limit = open_descriptors() + 4;
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).expect("the open-file limit");
    let hard = if hard_too { limit } else { hard };
    rlimit::setrlimit(Resource::NOFILE, limit, hard).expect("lowering the open-file limit");
    let mut files = Vec::new();
    for _ in 0..64 {
        match File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                assert!(dtmdriver_core::open_files::exhausted(&e), "{e}");
                return files;
            }
        }
    }
    panic!("64 files opened under a limit of {limit}");
}
