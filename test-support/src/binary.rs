//! Locating the external binaries the tests run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The message [`etcd_binary`] panics with when `etcd` cannot be found.
pub const ETCD_INSTALL_HINT: &str = "etcd not found: install it with: \
    sudo apt-get install -y etcd-server \
    (as root, e.g. in CI: apt-get install -y etcd-server); \
    `bash scripts/test.sh` installs it automatically";

/// Finds an executable called `name` on `PATH`, then at each of `fallbacks` in order.
///
/// Returns `None` if no candidate is an executable regular file.
///
/// ```
/// assert!(test_support::find_binary("sh", &["/bin/sh"]).is_some());
/// assert!(test_support::find_binary("no-such-binary-test-support", &[]).is_none());
/// ```
pub fn find_binary(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .filter(|dir| !dir.as_os_str().is_empty())
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|candidate| is_executable(candidate))
}

/// The path of the `etcd` server binary (`PATH`, then `/usr/bin/etcd`, then
/// `/usr/local/bin/etcd`).
///
/// # Panics
///
/// Panics with [`ETCD_INSTALL_HINT`] if `etcd` is not installed.
pub fn etcd_binary() -> PathBuf {
    find_binary("etcd", &["/usr/bin/etcd", "/usr/local/bin/etcd"])
        .unwrap_or_else(|| panic!("{ETCD_INSTALL_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
