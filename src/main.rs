//! Thin main: parse the command line, hand over to `cli::dispatch`, turn errors into a clear
//! message and a non-zero exit code.

use clap::Parser as _;

fn main() {
    let cli = jetstream_ingestor::cli::Cli::parse();
    match jetstream_ingestor::cli::dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
