//! The `cloudpki` binary: parse the command line, set up logging, run.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cloudpki::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into());
    match std::env::var("CLOUDPKI_LOG_FORMAT")
        .as_deref()
        .map(str::trim)
    {
        Err(_) | Ok("" | "text") => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, for log shippers.
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        Ok(other) => {
            eprintln!(
                "error: configuration error: CLOUDPKI_LOG_FORMAT: `{other}` is neither `text` nor `json`"
            );
            return std::process::ExitCode::from(2);
        }
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
