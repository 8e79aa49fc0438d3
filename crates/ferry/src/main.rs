//! `ferry`: copies a Redis dataset between deployments and keeps it in sync. `ferry --help` lists the commands;
//! docs/config.md describes the configuration file; the README lists the exit codes.

mod cli;

use clap::Parser;

fn main() {
    let code = cli::run(cli::args::Cli::parse());
    std::process::exit(code);
}
