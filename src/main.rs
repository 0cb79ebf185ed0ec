//! The `cloudpki` binary: parse the command line, set up logging, run.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cloudpki::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cloudpki::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
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
