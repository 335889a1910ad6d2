//! The `consent-analyzer` binary: parses the command line and hands over to
//! [`consent_analyzer::cli`], where the subcommands live.

use std::process::ExitCode;

use clap::Parser;
use consent_analyzer::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse().command)
}
