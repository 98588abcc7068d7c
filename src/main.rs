//! Entry point: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = asana_worker::cli::Cli::parse();
    asana_worker::cli::main(cli)
}
