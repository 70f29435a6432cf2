//! A thin command-line wrapper over the library, for benchmarks and manual
//! checks:
//!
//! ```text
//! ferry-tar create ROOT OUT.tar.zst [--level N] [--workers N] [--exclude PAT]...
//! ferry-tar extract IN.tar.zst DEST [--hostile|--faithful]
//! ferry-tar list IN.tar.zst [--hostile|--faithful]
//! ferry-tar manifest ROOT
//! ```
//!
//! `-` as OUT or IN means stdout or stdin. Errors print their reason code
//! and exit 1; usage errors exit 2.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_archive::{
    CreateOptions, ExtractPolicy, create_tar_zst, escape_name, extract_tar_zst, list_tar_zst, manifest,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("ferry-tar: {m}\nusage: ferry-tar create ROOT OUT | extract IN DEST | list IN | manifest ROOT");
            ExitCode::from(2)
        }
        Err(Failure::Archive(e)) => {
            eprintln!("ferry-tar: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Io(e)) => {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("ferry-tar: {e}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Archive(ferry_archive::ArchiveError),
    Io(io::Error),
}

impl From<ferry_archive::ArchiveError> for Failure {
    fn from(e: ferry_archive::ArchiveError) -> Self {
        Failure::Archive(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn policy(flags: &[String]) -> Result<ExtractPolicy, Failure> {
    let mut p = ExtractPolicy::default();
    for f in flags {
        match f.as_str() {
            "--hostile" => p = ExtractPolicy::hostile(),
            "--faithful" => p = ExtractPolicy::faithful(),
            other => return Err(Failure::Usage(format!("unknown flag {other}"))),
        }
    }
    Ok(p)
}

fn input(path: &str) -> io::Result<Box<dyn io::Read>> {
    Ok(if path == "-" { Box::new(io::stdin().lock()) } else { Box::new(std::fs::File::open(path)?) })
}

fn run(args: &[String]) -> Result<(), Failure> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    match cmd {
        "create" if args.len() >= 3 => {
            let mut opts = CreateOptions { root: PathBuf::from(&args[1]), ..CreateOptions::default() };
            let mut rest = args[3..].iter();
            while let Some(f) = rest.next() {
                let mut val = || rest.next().cloned().ok_or_else(|| Failure::Usage(format!("{f} needs a value")));
                match f.as_str() {
                    "--level" => opts.zstd_level = val()?.parse().map_err(|_| Failure::Usage("bad level".into()))?,
                    "--workers" => {
                        opts.zstd_workers = val()?.parse().map_err(|_| Failure::Usage("bad workers".into()))?
                    }
                    "--exclude" => opts.exclude.push(val()?),
                    "--xattrs" => opts.xattrs = true,
                    other => return Err(Failure::Usage(format!("unknown flag {other}"))),
                }
            }
            let stats = if args[2] == "-" {
                create_tar_zst(&opts, io::stdout().lock())?
            } else {
                let f = std::fs::File::create(&args[2])?;
                create_tar_zst(&opts, f)?
            };
            eprintln!("{stats:?}");
            Ok(())
        }
        "extract" if args.len() >= 3 => {
            let p = policy(&args[3..])?;
            let stats = extract_tar_zst(input(&args[1])?, &PathBuf::from(&args[2]), &p)?;
            eprintln!("{stats:?}");
            Ok(())
        }
        "list" if args.len() >= 2 => {
            let p = policy(&args[2..])?;
            let entries = list_tar_zst(input(&args[1])?, &p)?;
            let mut out = BufWriter::new(io::stdout().lock());
            for e in entries {
                writeln!(out, "{:?} {:o} {}:{} {} {}", e.kind, e.mode, e.uid, e.gid, e.size, escape_name(&e.path))?;
            }
            out.flush()?;
            Ok(())
        }
        "manifest" if args.len() == 2 => {
            let m = manifest::manifest(&PathBuf::from(&args[1]))?;
            let mut out = BufWriter::new(io::stdout().lock());
            for e in m {
                writeln!(
                    out,
                    "{:?} {:o} {}:{} {} {} {} {}",
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    e.mtime,
                    e.sha256.as_deref().unwrap_or("-"),
                    escape_name(&e.path)
                )?;
            }
            out.flush()?;
            Ok(())
        }
        _ => Err(Failure::Usage("bad arguments".into())),
    }
}
