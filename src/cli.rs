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
    /// Run the forwarder alone (no portal).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Audit events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Check an export of one subscription's logs (JSON lines or a JSON array, for example a
    /// Datadog Log Explorer export): `Sequence` continuity and the hash chain. Exit 0 when
    /// intact, 1 with one line per gap or break.
    Verify {
        /// The exported file (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
}

/// `verify` found gaps or breaks (exit status 1); the lines are already printed.
#[derive(Debug, thiserror::Error)]
#[error("the export is not intact")]
pub struct NotIntact;

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Record one audit event, exactly as the ingestion API would.
    Emit {
        /// Subscription id.
        #[arg(long)]
        subscription: String,
        /// Catalog Event ID, e.g. 4888.
        #[arg(long)]
        event_id: u32,
        /// Who did it.
        #[arg(long)]
        actor: Option<String>,
        /// Details as a JSON object.
        #[arg(long)]
        details: Option<String>,
    },
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
    /// Create an ingestion API token for a subscription and print it (shown once).
    CreateToken {
        /// Subscription id.
        #[arg(long)]
        subscription: String,
    },
    /// Create a personal API token for a user (the REST API; it acts with the user's roles)
    /// and print it (shown once).
    CreateApiToken {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// `read` (GET only) or `write` (read and change).
        #[arg(long, default_value = "write")]
        scope: String,
        /// Limit it to one subscription (id or exact name) of the user.
        #[arg(long)]
        subscription: Option<String>,
        /// The last day it works (YYYY-MM-DD, UTC); without it, it works until revoked.
        #[arg(long)]
        expires_on: Option<String>,
    },
    /// Re-seal every stored SIEM secret with the current master key. With DATABASE_URL: run it
    /// with the new key in CLOUDPKI_MASTER_KEY and the old one in CLOUDPKI_MASTER_KEY_PREVIOUS
    /// (which every process should have during the rotation). Embedded: generates a new key file
    /// (the old one is kept as master.key.previous); restart the portal afterwards.
    RotateMasterKey,
    /// Revoke an ingestion or personal API token by its id (printed when it was created).
    RevokeToken {
        /// Token id.
        #[arg(long)]
        id: String,
    },
    /// Print a fresh one-time setup link (valid 24 h) while no administrator exists.
    SetupLink,
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
            let shutdown = shutdown_signal();
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown, !no_worker).await
        }
        Command::Worker => {
            let config = Config::from_env(None)?;
            let shutdown = shutdown_signal();
            let app = Application::build_worker(config).await?;
            app.run_worker_until_stopped(shutdown).await
        }
        Command::Events(EventsCommand::Emit {
            subscription,
            event_id,
            actor,
            details,
        }) => {
            let config = Config::from_env(None)?;
            let db = Database::connect_or_join(&config).await?;
            let result = match db.migrate().await {
                Ok(()) => emit(&db, &subscription, event_id, actor, details).await,
                Err(e) => Err(e.into()),
            };
            db.shutdown().await;
            result
        }
        Command::Verify { file } => verify(&file),
        Command::Migrate => {
            let config = Config::from_env(None)?;
            let db = Database::connect_or_join(&config).await?;
            let result = db.migrate().await;
            db.shutdown().await;
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(admin) => {
            let config = Config::from_env(None)?;
            let db = Database::connect_or_join(&config).await?;
            let db_migrated = db.migrate().await;
            let result = match db_migrated {
                Ok(()) => run_admin(&db, &config, admin).await,
                Err(e) => Err(e.into()),
            };
            db.shutdown().await;
            result
        }
    }
}

/// `cloudpki verify FILE`: needs no database and no configuration.
fn verify(file: &std::path::Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| UsageError(format!("cannot read standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?
    };
    let report = crate::chain::verify(&text);
    for problem in &report.problems {
        println!("{problem}");
    }
    println!("{}", report.summary());
    if report.is_intact() {
        Ok(())
    } else {
        Err(NotIntact.into())
    }
}

async fn run_admin(db: &Database, config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::SetupLink => {
            if store::accounts::any_user_exists(&db.pool).await? {
                return Err(UsageError(
                    "an administrator exists already: sign in, or create users with `cloudpki admin create-user`".into(),
                )
                .into());
            }
            let token = crypto::random_token();
            store::accounts::replace_setup_token(&db.pool, &crypto::token_digest(&token)).await?;
            let base = config.effective_public_url(config.listen);
            eprintln!(
                "one-time setup link, valid for {} hours (any older link stops working):",
                store::accounts::SETUP_TOKEN_HOURS
            );
            println!("{}/setup/{token}", base.as_str().trim_end_matches('/'));
            Ok(())
        }
        AdminCommand::CreateSubscription { name } => {
            let name =
                SubscriptionName::parse(&name).map_err(|e| UsageError(format!("--name: {e}")))?;
            let id = store::accounts::create_subscription(&db.pool, &name).await?;
            println!("{id}");
            Ok(())
        }
        AdminCommand::CreateToken { subscription } => {
            let subscription_id = parse_subscription(&db.pool, &subscription).await?;
            let token = crypto::random_token();
            let id = store::events::create_token(
                &db.pool,
                subscription_id,
                &crypto::token_digest(&token),
            )
            .await?;
            eprintln!("token id {id} (revoke with `cloudpki admin revoke-token --id {id}`); the token is shown only once:");
            println!("{token}");
            Ok(())
        }
        AdminCommand::CreateApiToken {
            email,
            name,
            scope,
            subscription,
            expires_on,
        } => {
            let Some(user) = store::accounts::find_user_by_email(&db.pool, email.trim()).await?
            else {
                return Err(UsageError(format!("--email: no user has the email {email}")).into());
            };
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(UsageError("--name: give 1 to 100 characters".into()).into());
            }
            let writes = crate::domain::account::parse_token_scope(&scope)
                .map_err(|e| UsageError(format!("--scope: {e}")))?;
            let expires_at = crate::domain::account::parse_token_expiry(
                expires_on.as_deref().unwrap_or_default(),
                chrono::Utc::now().date_naive(),
            )
            .map_err(|e| UsageError(format!("--expires-on: {e}")))?;
            let subscription_id = match subscription {
                Some(s) => Some(parse_subscription(&db.pool, &s).await?),
                None => None,
            };
            let grant = store::personal_tokens::TokenGrant {
                writes,
                subscription_id,
                expires_at,
            };
            let token = crypto::random_token();
            let id = store::personal_tokens::create(
                &db.pool,
                user.id,
                name,
                &crypto::token_digest(&token),
                grant,
            )
            .await
            .map_err(|e| match e {
                store::Error::NotFound => anyhow::Error::from(UsageError(format!(
                    "--subscription: {email} is not a member of that subscription"
                ))),
                other => anyhow::Error::from(other),
            })?;
            eprintln!("personal API token id {id} for {} (revoke with `cloudpki admin revoke-token --id {id}`); the token is shown only once:", user.email);
            println!("{token}");
            Ok(())
        }
        AdminCommand::RotateMasterKey => rotate_master_key(db, config).await,
        AdminCommand::RevokeToken { id } => {
            let id = Uuid::parse_str(id.trim())
                .map_err(|_| UsageError(format!("--id: `{id}` is not a token id (a UUID)")))?;
            if store::events::revoke_token(&db.pool, id).await?
                || store::personal_tokens::revoke(&db.pool, id, None).await?
            {
                println!("revoked {id}");
                Ok(())
            } else {
                Err(UsageError(format!("--id: no live token has the id {id}")).into())
            }
        }
        AdminCommand::CreateUser {
            email,
            subscription,
            role,
        } => {
            let email = Email::parse(&email).map_err(|e| UsageError(format!("--email: {e}")))?;
            let role = Role::parse(&role).map_err(|e| UsageError(format!("--role: {e}")))?;
            let subscription_id = parse_subscription(&db.pool, &subscription).await?;
            let account = match store::accounts::user_by_email_for_operator(&db.pool, &email)
                .await?
            {
                Some((_, false)) => {
                    return Err(UsageError(format!(
                        "--email: {email} has an account that no admin command made (it was made by accepting an invitation, or before cloudpki recorded how accounts are made), so nothing proves that its password belongs to whoever reads that mailbox; create-user gives it no role. Invite the address from the subscription's Members page instead, with email configured (CLOUDPKI_SMTP_URL), so the link goes to the mailbox itself."
                    ))
                    .into());
                }
                Some((id, true)) => {
                    eprintln!(
                        "{email} already exists; giving them the role {} in the subscription",
                        role.as_str()
                    );
                    store::accounts::Account::Existing(id)
                }
                None => {
                    let password = read_password_from_stdin()?;
                    let hash =
                        crypto::hash_password_blocking(password.expose_secret().to_owned()).await?;
                    store::accounts::Account::New {
                        email: email.clone(),
                        hash,
                        via: store::accounts::CreatedVia::Operator,
                    }
                }
            };
            let user_id =
                store::accounts::add_to_subscription(&db.pool, &account, subscription_id, role)
                    .await?;
            println!("{user_id}");
            Ok(())
        }
    }
}

async fn emit(
    db: &Database,
    subscription: &str,
    event_id: u32,
    actor: Option<String>,
    details: Option<String>,
) -> anyhow::Result<()> {
    let subscription_id = parse_subscription(&db.pool, subscription).await?;
    let details: serde_json::Value = match details {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| UsageError(format!("--details: not valid JSON ({e}); pass an object such as '{{\"template\":\"WebServer\"}}'")))?,
        None => serde_json::json!({}),
    };
    let mut body = serde_json::json!({ "event_id": event_id, "details": details });
    if let Some(actor) = actor {
        body["actor"] = serde_json::json!(actor);
    }
    let events = match crate::domain::ingest::parse_body(&body, chrono::Utc::now()) {
        Ok(events) => events,
        Err(
            crate::domain::ingest::IngestError::Invalid(problems)
            | crate::domain::ingest::IngestError::TooLarge(problems),
        ) => {
            let text = problems
                .iter()
                .map(|p| format!("--{}: {}", p.field.replace('_', "-"), p.message))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(UsageError(text).into());
        }
        Err(crate::domain::ingest::IngestError::TooMany(n)) => {
            return Err(UsageError(format!("{n} events given; emit takes one")).into())
        }
    };
    let new: Vec<store::events::NewEvent> = events
        .into_iter()
        .map(|e| store::events::NewEvent {
            id: e.id,
            event_id: i32::try_from(e.event_id.get()).unwrap_or_default(),
            occurred_at: e.occurred_at,
            actor: e.actor,
            details: e.details,
        })
        .collect();
    let id = new[0].id;
    let recorded = store::events::record(&db.pool, subscription_id, &new).await?;
    // A one-shot process has no sequencer of its own: give the event its place in the log now.
    store::events::sequence_all(&db.pool, subscription_id).await?;
    if recorded.in_log {
        store::events::announce(&db.pool, subscription_id).await?;
    }
    println!("{id}");
    Ok(())
}

async fn parse_subscription(pool: &sqlx::PgPool, raw: &str) -> anyhow::Result<Uuid> {
    let id = Uuid::parse_str(raw.trim()).map_err(|_| {
        UsageError(format!(
            "--subscription: `{raw}` is not a subscription id (a UUID)"
        ))
    })?;
    if !store::accounts::subscription_exists(pool, id).await? {
        return Err(UsageError(format!("--subscription: no subscription has the id {id}")).into());
    }
    Ok(id)
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
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The handlers are installed now, before any work starts: a SIGTERM that arrives early
    // still shuts down cleanly instead of killing the process.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match int {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = term => {},
            () = int => {},
        }
        tracing::info!("shutdown requested; finishing requests in flight");
    }
}

/// Re-seals every SIEM secret that is not sealed with the current key (see
/// [`AdminCommand::RotateMasterKey`]). One transaction: either every secret that opens is
/// re-sealed or none is. Secrets no key opens are listed, left as they are.
async fn rotate_master_key(db: &Database, config: &Config) -> anyhow::Result<()> {
    use crate::app::{load_or_generate_master_key, MASTER_KEY_FILE};
    let (key, new_file) = match &config.master_key {
        Some(key) if key.previous_id().is_some() => (key.clone(), None),
        Some(_) => {
            return Err(UsageError(
                "put the new key in CLOUDPKI_MASTER_KEY and the old one in CLOUDPKI_MASTER_KEY_PREVIOUS, then run this again".into(),
            )
            .into())
        }
        None => {
            let old = load_or_generate_master_key(&config.data_dir)?;
            let new = crypto::MasterKey::generate().with_previous(old.clone());
            (new, Some(old))
        }
    };
    let rows = store::siem::secrets_not_sealed_with(&db.pool, key.id()).await?;
    let (mut fresh, mut unreadable) = (Vec::new(), Vec::new());
    for row in rows {
        // The same associated data the settings seal with: a rotation can never drift from it.
        let opened = crate::siem::Provider::parse(&row.provider)
            .ok()
            .and_then(|provider| {
                let dest = crate::domain::destination::DestinationKey::new(
                    row.subscription_id,
                    crate::domain::destination::DestinationNo::new(row.destination)?,
                );
                let context = crate::siem::provider::secret_context(dest, provider, &row.name);
                key.open(&row.sealed(), &context)
                    .map(|plain| (plain, context))
            });
        match opened {
            Some((plain, context)) => {
                let sealed = key.seal(&plain, &context);
                fresh.push((row, sealed));
            }
            None => unreadable.push(format!(
                "{} destination {} {} {}",
                row.subscription_id, row.destination, row.provider, row.name
            )),
        }
    }
    let resealed = fresh.len();
    if let Some(old) = &new_file {
        // The new key file is written before the commit: if writing fails nothing changed.
        let dir = &config.data_dir;
        let temp = dir.join("master.key.new");
        store::siem::reseal_all(&db.pool, &fresh, key.id(), || -> anyhow::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::copy(dir.join(MASTER_KEY_FILE), dir.join("master.key.previous"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            writeln!(file, "{}", key.to_base64())?;
            file.sync_all()?;
            Ok(())
        })
        .await?;
        std::fs::rename(&temp, dir.join(MASTER_KEY_FILE)).with_context(|| {
            format!(
                "the secrets are sealed with the new key, which is in {}: move it to {} by hand",
                temp.display(),
                MASTER_KEY_FILE
            )
        })?;
        eprintln!(
            "new master key {} written to {} (the old one, {}, is kept as master.key.previous); restart the portal",
            key.id(),
            dir.join(MASTER_KEY_FILE).display(),
            old.id()
        );
    } else {
        store::siem::reseal_all(&db.pool, &fresh, key.id(), || anyhow::Ok(())).await?;
        eprintln!(
            "every secret is now sealed with key {}; remove CLOUDPKI_MASTER_KEY_PREVIOUS from every process",
            key.id()
        );
    }
    println!("re-sealed {resealed} secret(s)");
    for row in &unreadable {
        println!("could not open (neither key): {row}");
    }
    Ok(())
}
