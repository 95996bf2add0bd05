//! The MAIN loop (placeholder until written).
use std::path::Path;

use crate::error::{Error, Result};

pub fn run_file(config: &Path) -> Result<()> {
    Err(Error::invalid(
        "pipeline",
        format!("{}: not implemented yet", config.display()),
    ))
}
