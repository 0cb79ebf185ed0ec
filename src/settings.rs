//! A subscription's stored SIEM settings: loading and unsealing them, and the destination the
//! forwarder sends through. The form rules are the providers' own (`siem::config`); this
//! module is where they meet the store.

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    siem::{
        config::{
            secret_context, validate, Context, FormValues, StoredProvider, StoredSecret, Validated,
        },
        egress::EgressPolicy,
        registry::Provider,
        SiemDestination,
    },
    store,
};

/// Loads and unseals what is stored for `provider` (see [`load_all`]).
pub async fn load(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
    provider: Provider,
) -> Result<StoredProvider, store::Error> {
    Ok(load_all(pool, master_key, subscription_id)
        .await?
        .into_iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, stored)| stored)
        .unwrap_or_default())
}

/// Loads and unseals what is stored for every provider, in two queries.
pub async fn load_all(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
) -> Result<Vec<(Provider, StoredProvider)>, store::Error> {
    let fields = store::siem::all_provider_fields(pool, subscription_id).await?;
    let secrets = store::siem::all_secrets(pool, subscription_id).await?;
    Ok(Provider::all()
        .map(|provider| {
            let mut stored = StoredProvider {
                fields: fields
                    .iter()
                    .find(|(p, _)| p == provider.id())
                    .and_then(|(_, v)| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default(),
                secrets: BTreeMap::new(),
            };
            for field in provider.sealed_fields() {
                let Some(name) = field.sealed_as else {
                    continue;
                };
                if let Some((_, _, row)) = secrets
                    .iter()
                    .find(|(p, n, _)| p == provider.id() && n == name)
                {
                    let context = secret_context(subscription_id, provider, name);
                    let value = master_key
                        .open(&row.sealed, &context)
                        .and_then(|bytes| String::from_utf8(bytes).ok());
                    let opened = match value {
                        Some(v) => StoredSecret::Usable(v, row.hint.clone()),
                        None => StoredSecret::Unreadable(row.hint.clone()),
                    };
                    stored.secrets.insert(field.name.to_owned(), opened);
                }
            }
            (provider, stored)
        })
        .collect())
}

/// The destination the forwarder sends through, or why there is none.
pub async fn destination(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
    provider: Provider,
    egress: &EgressPolicy,
    context: Context<'_>,
) -> Result<Result<Box<dyn SiemDestination>, String>, store::Error> {
    let stored = load(pool, master_key, subscription_id, provider).await?;
    let form: FormValues = stored.fields.clone();
    Ok(match validate(provider, &form, &stored, egress, true, context) {
        // The send path never makes up a secret: a signing secret generated here (the stored
        // one could not be read) would sign with a key no receiver has.
        Ok(Validated {
            generated_secret: Some(_),
            ..
        }) => Err(format!(
            "The stored {} signing secret can no longer be read (the master key changed); open Settings, tick \"Rotate the signing secret\" and save, then give the new secret to the receiver.",
            provider.label()
        )),
        Ok(Validated {
            destination: Some(destination),
            ..
        }) => Ok(destination),
        Ok(_) => Err(format!(
            "The {} settings are incomplete; open Settings and complete them.",
            provider.label()
        )),
        Err(errors) => Err(format!(
            "The stored {} settings are not valid any more ({}); open Settings, fix them and save.",
            provider.label(),
            errors.0.values().cloned().collect::<Vec<_>>().join(" ")
        )),
    })
}
