//! The agent's configuration (flags and environment, parsed in main).

use std::path::PathBuf;
use std::time::Duration;

use crate::git::Credentials;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This agent's name; records say `agent = "<name>"`.
    pub name: String,
    /// Base URL of the controller, e.g. http://127.0.0.1:3452.
    pub controller: String,
    /// Address other machines' containers use to reach this agent's ports.
    pub advertise: String,
    /// Host IP that published ports bind to.
    pub bind_ip: String,
    pub work_dir: PathBuf,
    /// Long-poll wait, and so the steady-state resync period.
    pub poll_wait: Duration,
    /// How often branch heads are asked for, even when nothing was applied.
    pub branch_check: Duration,
    /// Longest a build or prepare command may run.
    pub build_timeout: Duration,
    pub git_credentials: Option<Credentials>,
}

impl AgentConfig {
    pub fn new(name: &str, controller: &str, work_dir: PathBuf, address: &str) -> Self {
        Self {
            name: name.to_string(),
            controller: controller.trim_end_matches('/').to_string(),
            advertise: address.to_string(),
            bind_ip: address.to_string(),
            work_dir,
            poll_wait: crate::retry::POLL_WAIT,
            branch_check: Duration::from_secs(60),
            build_timeout: Duration::from_secs(600),
            git_credentials: None,
        }
    }
}
