//! The `cloudpki` binary: parse the command line, set up logging (`telemetry`), run.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cloudpki::cli::Cli::parse();
    if let Err(e) = cloudpki::telemetry::init_logging() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    match cloudpki::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<cloudpki::cli::NotIntact>().is_some() => {
            std::process::ExitCode::from(1)
        }
        Err(err) => {
            let user_error = err
                .downcast_ref::<cloudpki::config::ConfigError>()
                .is_some()
                || err.downcast_ref::<cloudpki::cli::UsageError>().is_some();
            if user_error {
                eprintln!("error: {err}");
                std::process::ExitCode::from(2)
            } else {
                eprintln!("error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}
