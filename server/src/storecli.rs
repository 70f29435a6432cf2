//! `ferry-node store …`: the artifact store's key and state.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use crate::config::NodeConfig;
use crate::exit::{self, UsageError};
use crate::out;
use crate::store::{Health, Lock};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a new age identity to the store's key file (`[store] key`,
    /// mode 0600, atomically) and print its public recipient. In the
    /// two-account layout the file is 0640 in the node's shared group, so
    /// both accounts read it.
    ///
    /// Refuses to replace an existing key: objects encrypted to it would
    /// be lost. With --rotate the new identity goes first (new objects are
    /// encrypted to it) and the older ones stay after it, so objects
    /// encrypted to them still decrypt. Copy the file to an offline place
    /// after every change: without it no encrypted backup can be read.
    Keygen {
        /// Add a new key to an existing file, keeping the old ones.
        #[arg(long)]
        rotate: bool,
        /// The key file (default: `[store] key` of the configuration).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Show the store's state: reachable (and taking the node's
    /// credentials), encryption key readable and working, object lock.
    /// Exit 3 when something the configuration asks for is not so.
    Check,
}

/// What `store check` found.
#[derive(Debug, Serialize)]
pub struct StoreState {
    pub kind: String,
    /// `S3 bucket B at E`.
    pub store: String,
    /// `up`, or why not.
    pub reachable: String,
    /// `off`, `age <recipient>`, or the key's problem.
    pub encryption: String,
    pub object_lock: Lock,
    /// `[store] object_lock`.
    pub object_lock_required: bool,
    /// What is not as the configuration asks.
    pub problems: Vec<String>,
}

pub fn run(cfg: &NodeConfig, command: StoreCommand, json: bool) -> anyhow::Result<u8> {
    match command {
        StoreCommand::Keygen { rotate, key } => {
            let Some(path) = key.or_else(|| cfg.store.key.clone()) else {
                return Err(UsageError("say where the key goes: [store] key in node.toml, or --key PATH".into()).into());
            };
            let public = crate::store::crypt::keygen(&path, rotate, crate::layout::SharedGroup::of(cfg).as_ref())?;
            if json {
                out::json(&serde_json::json!({ "key": path, "recipient": public, "rotated": rotate }))?;
            } else {
                out::line(&format!(
                    "{} {}: recipient {public}",
                    if rotate { "rotated" } else { "wrote" },
                    path.display()
                ))?;
                out::line("keep an offline copy of the key file: without it no encrypted backup can be read")?;
            }
            Ok(exit::OK)
        }
        StoreCommand::Check => {
            let st = check(cfg)?;
            if json {
                out::json(&st)?;
            } else {
                out::line(&format!("store: {}", st.store))?;
                out::line(&format!("reachable: {}", st.reachable))?;
                out::line(&format!("encryption: {}", st.encryption))?;
                out::line(&format!(
                    "object lock: {}{}",
                    st.object_lock.describe(),
                    if st.object_lock_required { " (required by [store] object_lock)" } else { "" }
                ))?;
                for p in &st.problems {
                    out::line(&format!("problem: {p}"))?;
                }
            }
            Ok(if st.problems.is_empty() { exit::OK } else { exit::PROBLEMS })
        }
    }
}

fn check(cfg: &NodeConfig) -> anyhow::Result<StoreState> {
    if cfg.store.kind != "s3" {
        return Ok(StoreState {
            kind: cfg.store.kind.clone(),
            store: format!("{}", cfg.data_dir().display()),
            reachable: "up".into(),
            encryption: "off".into(),
            object_lock: Lock::Unknown { detail: "the node's own disk".into() },
            object_lock_required: false,
            problems: Vec::new(),
        });
    }
    let s = crate::store::S3Store::connect(cfg)?;
    let mut problems = Vec::new();
    let reachable = match s.probe() {
        Health::Up => "up".to_owned(),
        Health::Down(why) | Health::Refused(why) => {
            problems.push(why.clone());
            why
        }
    };
    let encryption = match s.encryption() {
        Ok(None) => "off".to_owned(),
        Ok(Some(r)) => format!("age, new objects to {r}"),
        Err(e) => {
            problems.push(e.clone());
            e
        }
    };
    let object_lock = if problems.is_empty() || reachable == "up" {
        s.lock()
    } else {
        Lock::Unknown { detail: "the store did not answer".into() }
    };
    if cfg.store.object_lock && !matches!(object_lock, Lock::Retained { .. }) {
        problems.push(format!("[store] object_lock = true, but {}", object_lock.describe()));
    }
    Ok(StoreState {
        kind: "s3".into(),
        store: s.describe(),
        reachable,
        encryption,
        object_lock,
        object_lock_required: cfg.store.object_lock,
        problems,
    })
}
