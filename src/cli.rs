//! The command line (DESIGN.md, "Contract: command line").

use std::io::BufRead as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::{
    app::Application,
    config::Config,
    crypto,
    db::Database,
    domain::account::{Email, NewPassword, Role, SubscriptionName},
    store,
};

/// cloudpki: settings portal and audit-log exporter of a Cloud PKI.
#[derive(Debug, Parser)]
#[command(name = "cloudpki", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the portal; applies pending migrations first.
    Serve {
        /// Address to listen on (overrides CLOUDPKI_LISTEN).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Do not run the forwarder in this process.
        #[arg(long)]
        no_worker: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a subscription and print its id.
    CreateSubscription {
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Create a user (password read from stdin) and give them a role in a subscription.
    CreateUser {
        /// Email address (the sign-in name).
        #[arg(long)]
        email: String,
        /// Subscription id.
        #[arg(long)]
        subscription: String,
        /// admin or reader.
        #[arg(long)]
        role: String,
    },
}

/// An error the user caused and can fix; printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, no_worker } => {
            let config = Config::from_env(listen.as_deref())?;
            if no_worker {
                tracing::info!("--no-worker: this process runs the portal only");
            }
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let config = Config::from_env(None)?;
            let db = Database::connect(&config).await?;
            let result = db.migrate().await;
            db.shutdown().await;
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(admin) => {
            let config = Config::from_env(None)?;
            let db = Database::connect(&config).await?;
            let db_migrated = db.migrate().await;
            let result = match db_migrated {
                Ok(()) => run_admin(&db, admin).await,
                Err(e) => Err(e.into()),
            };
            db.shutdown().await;
            result
        }
    }
}

async fn run_admin(db: &Database, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateSubscription { name } => {
            let name =
                SubscriptionName::parse(&name).map_err(|e| UsageError(format!("--name: {e}")))?;
            let mut tx = db.pool.begin().await?;
            let id = store::accounts::create_subscription(&mut tx, &name).await?;
            tx.commit().await?;
            println!("{id}");
            Ok(())
        }
        AdminCommand::CreateUser {
            email,
            subscription,
            role,
        } => {
            let email = Email::parse(&email).map_err(|e| UsageError(format!("--email: {e}")))?;
            let role = Role::parse(&role).map_err(|e| UsageError(format!("--role: {e}")))?;
            let subscription_id = Uuid::parse_str(subscription.trim()).map_err(|_| {
                UsageError(format!(
                    "--subscription: `{subscription}` is not a subscription id (a UUID)"
                ))
            })?;
            if !store::accounts::subscription_exists(&db.pool, subscription_id).await? {
                return Err(UsageError(format!(
                    "--subscription: no subscription has the id {subscription_id}"
                ))
                .into());
            }
            let mut tx = db.pool.begin().await?;
            let user_id = match store::accounts::user_id_by_email(&mut tx, &email).await? {
                Some(id) => {
                    eprintln!(
                        "{email} already exists; giving them the role {} in the subscription",
                        role.as_str()
                    );
                    id
                }
                None => {
                    let password = read_password_from_stdin()?;
                    let hash =
                        crypto::hash_password_blocking(password.expose_secret().to_owned()).await;
                    store::accounts::create_user(&mut tx, &email, &hash).await?
                }
            };
            store::accounts::upsert_membership(&mut tx, user_id, subscription_id, role).await?;
            tx.commit().await?;
            println!("{user_id}");
            Ok(())
        }
    }
}

fn read_password_from_stdin() -> anyhow::Result<NewPassword> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(UsageError("password: none given on stdin; pipe it in, e.g. `printf '%s\\n' \"$PASSWORD\" | cloudpki admin create-user ...`".into()).into());
    }
    NewPassword::parse(password).map_err(|e| UsageError(format!("password: {e}")).into())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
