//! The `hindsight` command line: parses arguments and calls into the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = hindsight::cli::Cli::parse();
    hindsight::cli::init_logging(&cli.global);
    match hindsight::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", hindsight::cli::error_chain(&e));
            std::process::ExitCode::from(1)
        }
    }
}
