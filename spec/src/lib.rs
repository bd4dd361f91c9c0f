//! SDP's shared vocabulary: the records people write (`service`, `gateway`,
//! `sandbox`), how they are read from TOML with located errors, and the types
//! the controller, agents and sdpctl exchange.
//!
//! Invariants:
//! - A record that parses is valid on its own: names, ports, paths, commands and
//!   in-sandbox host ports are checked while reading. Checks that need other
//!   records (the catalog) live in the controller.
//! - No I/O here.

pub mod parse;
pub mod record;
pub mod schema;
pub mod suggest;
pub mod types;
pub mod wire;

pub use parse::{Document, SpecError, SpecErrors, parse_json, parse_toml};
pub use record::{Gateway, Issue, Kind, Record, Sandbox, SandboxGateway, SandboxService, Service};
pub use types::{Name, Port};
