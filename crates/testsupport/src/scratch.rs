//! One test's scratch directory: its identities, configurations and agent logs, removed on drop.
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use crate::config::TestConfig;
use crate::identity::{Admin, NodeFiles};
use crate::process::AgentSpec;

pub struct Scratch {
    pub dir: PathBuf,
    /// The agent binary the test runs (for its admin subcommands and as the agent).
    pub admin: Admin,
}

impl Scratch {
    /// A fresh directory for test `name` of this process, for agents run from `binary`.
    pub fn new(binary: impl Into<PathBuf>, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("x0-agent-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch {
            dir,
            admin: Admin::new(binary),
        }
    }

    /// `authority init`; returns the authority's directory.
    pub fn authority(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        self.admin.authority_init(&dir);
        dir
    }

    /// `keys init` and `endorse` for node `name` of `mesh`; returns its files.
    pub fn node(&self, authority: &Path, mesh: &str, name: &str) -> NodeFiles {
        self.admin.node(
            authority,
            mesh,
            name,
            self.dir.join("state").join(name),
            self.dir.join(format!("{name}.endorsement")),
        )
    }

    /// The default configuration of `mesh` ([`TestConfig::new`]), post-quantum required or not.
    pub fn config(&self, mesh: &str, require_post_quantum: bool) -> PathBuf {
        self.write_config(&TestConfig::new(mesh).require_post_quantum(require_post_quantum))
    }

    /// Writes `config` into the directory (one file per distinct configuration); its path.
    pub fn write_config(&self, config: &TestConfig) -> PathBuf {
        let text = config.render();
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let path = self
            .dir
            .join(format!("{}-{:016x}.yaml", config.mesh(), hasher.finish()));
        std::fs::write(&path, text).expect("write the agent configuration");
        path
    }

    /// How to start `node`'s agent with `config` in standalone mode, logging to
    /// `<dir>/<name>.log` (appended to across restarts).
    pub fn agent(&self, node: &NodeFiles, config: &Path) -> AgentSpec {
        AgentSpec::standalone(
            &self.admin.binary,
            node,
            config,
            self.dir.join(format!("{}.log", node.name)),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // X0_KEEP_SCRATCH keeps the agents' logs and state to look at after a test.
        if std::env::var_os("X0_KEEP_SCRATCH").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
