//! `cloudpki admin rotate-master-key`: every stored secret is re-sealed with the new key while
//! the old one still opens what it sealed; afterwards the new key alone opens them.

use crate::support;
use crate::support::{fake_datadog::FakeDatadog, TestApp};
use cloudpki::crypto::MasterKey;

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn rotating_the_master_key_reseals_every_secret_and_delivery_goes_on() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let old = app.master_key.clone();
    let new = MasterKey::generate();
    let run = |vars: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cloudpki"));
        cmd.envs(support::test_env())
            .env("DATABASE_URL", app.database_url())
            .envs(vars.iter().map(|(k, v)| (*k, v.clone())))
            .args(["admin", "rotate-master-key"]);
        cmd.output().unwrap()
    };

    // Without the old key beside the new one, nothing happens.
    let out = run(&[("CLOUDPKI_MASTER_KEY", new.to_base64())]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&[
        ("CLOUDPKI_MASTER_KEY", new.to_base64()),
        ("CLOUDPKI_MASTER_KEY_PREVIOUS", old.to_base64()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "re-sealed 1 secret(s)"
    );
    let key_ids: Vec<String> = sqlx::query_scalar("select key_id from siem_secrets")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(key_ids, [new.id().to_owned()]);

    // The new key alone opens it (what a portal restarted without the old key reads).
    let stored = cloudpki::settings::load(
        &app.pool,
        &new,
        cloudpki::domain::destination::DestinationKey::first(sub),
        cloudpki::siem::datadog::provider(),
    )
    .await
    .unwrap();
    assert_eq!(
        stored
            .secrets
            .get("datadog_api_key")
            .and_then(|s| s.usable()),
        Some(KEY)
    );
}
