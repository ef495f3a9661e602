//! What the bench binaries share: their settings from the environment, the machine's
//! load printed beside every table, and medians.

/// A comma-separated list of numbers from the environment variable `name`, else
/// `default`.
///
/// # Panics
///
/// Panics naming the variable when one of its values is not a whole number.
pub fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: comma-separated numbers, got `{v}`"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// The 1-minute load average (`/proc/loadavg`), `?` where there is none.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The median of `v` (the upper one of an even count), sorting it.
///
/// # Panics
///
/// Panics if `v` is empty.
pub fn median<T: Ord + Copy>(v: &mut [T]) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}
