//! Identities as an operator would make them outside a cluster: the agent binary's admin
//! subcommands (`authority init`, `keys init`, `endorse`).
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{NAMESPACE, TRUST_DOMAIN};

/// The files of one node's identity: what an agent in standalone mode is started with.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub name: String,
    pub state_dir: PathBuf,
    pub endorsement: PathBuf,
    pub authority_public_key: PathBuf,
}

/// The SPIFFE ID of node `name` of mesh `mesh` in the tests' trust domain and namespace.
pub fn spiffe_id(mesh: &str, name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/mesh/{mesh}/node/{name}")
}

/// The agent binary, run for its admin subcommands.
#[derive(Debug, Clone)]
pub struct Admin {
    pub binary: PathBuf,
}

impl Admin {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Admin {
            binary: binary.into(),
        }
    }

    /// Runs a subcommand; its standard output, trimmed. Panics with its error output on failure.
    pub fn run(&self, args: &[&str]) -> String {
        crate::run(Command::new(&self.binary).args(args), &format!("{args:?} failed"))
            .trim()
            .to_owned()
    }

    /// `authority init`: `dir/authority.key` and `dir/authority.pub`.
    pub fn authority_init(&self, dir: &Path) {
        self.run(&["authority", "init", "--out", path_str(dir)]);
    }

    /// `keys init`: a node key in `state_dir`; returns the path of its public key.
    pub fn keys_init(&self, state_dir: &Path) -> PathBuf {
        PathBuf::from(self.run(&["keys", "init", "--state-dir", path_str(state_dir)]))
    }

    /// `endorse`: the authority in `authority_dir` endorses `public_key` as `spiffe_id` at
    /// `epoch` for two hours, written to `out`.
    pub fn endorse(&self, authority_dir: &Path, public_key: &Path, spiffe_id: &str, epoch: u32, out: &Path) {
        self.run(&[
            "endorse",
            "--authority",
            path_str(&authority_dir.join("authority.key")),
            "--public-key",
            path_str(public_key),
            "--spiffe-id",
            spiffe_id,
            "--epoch",
            &epoch.to_string(),
            "--valid-for",
            "2h",
            "--out",
            path_str(out),
        ]);
    }

    /// A node of `mesh` named `name`: its key in `state_dir`, endorsed at epoch 1 by the
    /// authority in `authority_dir` into `endorsement`.
    pub fn node(
        &self,
        authority_dir: &Path,
        mesh: &str,
        name: &str,
        state_dir: PathBuf,
        endorsement: PathBuf,
    ) -> NodeFiles {
        let public_key = self.keys_init(&state_dir);
        self.endorse(
            authority_dir,
            &public_key,
            &spiffe_id(mesh, name),
            1,
            &endorsement,
        );
        NodeFiles {
            name: name.to_owned(),
            state_dir,
            endorsement,
            authority_public_key: authority_dir.join("authority.pub"),
        }
    }
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
