//! The `hindsight` command line: parses arguments and calls into the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = hindsight::cli::Cli::parse();
    hindsight::cli::init_logging(&cli.global);
    let json_logs = cli.global.log_format == hindsight::cli::LogFormat::Json;
    match hindsight::cli::run(cli) {
        Ok(code) => code,
        Err(e) => std::process::ExitCode::from(hindsight::cli::report_error(&e, json_logs)),
    }
}
