//! The SIGKILL torture (see `ferry_tests::torture`), run by
//! `bench/torture.sh`:
//!
//! ```text
//! ferry-torture [TRIALS] [--seed N] [--check-every N] [--pipe-bytes N] [--quiet]
//! ```
//!
//! Prints the counts (trials, kills per target, requests, violations) and
//! exits 1 if any invariant was violated.

use ferry_tests::torture::{Options, run_torture};

fn main() {
    let mut opts = Options { verbose: true, ..Options::default() };
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: ferry-torture [TRIALS] [--seed N] [--check-every N] [--pipe-bytes N] [--quiet]");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{what} needs a number");
                usage()
            })
        };
        match a.as_str() {
            "--seed" => opts.seed = num("--seed"),
            "--check-every" => opts.check_every = num("--check-every") as usize,
            "--pipe-bytes" => opts.pipe_bytes = num("--pipe-bytes") as usize,
            "--quiet" => opts.verbose = false,
            "-h" | "--help" => usage(),
            n => opts.trials = n.parse().unwrap_or_else(|_| usage()),
        }
    }
    let report = run_torture(&opts);
    print!("{report}");
    std::process::exit(if report.ok() { 0 } else { 1 });
}
