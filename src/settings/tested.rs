//! Save-after-Test: the secrets a green Test Connection used, held sealed for a few minutes and
//! bound to the session and the tested addresses, so Save changes needs them only once.

use std::collections::BTreeMap;

use super::{Error, Service};
use crate::{
    domain::destination::DestinationKey,
    siem::{provider::FieldKind, provider::FormValues, Provider},
    store,
};

/// How long secrets that passed Test Connection are held for Save changes.
pub const TESTED_SECRETS_MINUTES: i64 = 10;

/// The associated data of a session's tested secrets (the first destination's as before
/// destinations had numbers).
pub fn tested_context(dest: DestinationKey, provider: Provider, digest: &[u8]) -> String {
    format!(
        "{}/{}/tested/{}",
        dest.sealing_prefix(),
        provider.id(),
        hex::encode(digest)
    )
}

/// After a green Test Connection: holds the secrets typed for it, sealed, bound to this
/// session and to the address fields as tested. Returns whether anything is held.
pub async fn hold_tested(
    svc: Service<'_>,
    dest: DestinationKey,
    digest: &[u8],
    provider: Provider,
    values: &FormValues,
) -> Result<bool, Error> {
    let typed: BTreeMap<&str, &str> = provider
        .sealed_fields()
        .filter(|field| !matches!(field.kind, FieldKind::Url))
        .filter_map(|field| {
            values
                .get(field.name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (field.name, v))
        })
        .collect();
    if typed.is_empty() {
        return Ok(false);
    }
    // Only digests of the addresses are kept: a URL may carry a credential in its query.
    let addresses: BTreeMap<&str, String> = provider
        .address_fields()
        .map(|field| {
            (
                field.name,
                address_digest(svc, values.get(field.name).map_or("", |v| v.trim())),
            )
        })
        .collect();
    let plain = serde_json::to_vec(&typed).map_err(anyhow::Error::from)?;
    let sealed = svc
        .master_key
        .seal(&plain, &tested_context(dest, provider, digest));
    store::siem::hold_tested_secrets(
        svc.pool,
        dest,
        digest,
        provider.id(),
        &serde_json::to_value(addresses).map_err(anyhow::Error::from)?,
        &sealed,
        chrono::Utc::now() + chrono::Duration::minutes(TESTED_SECRETS_MINUTES),
    )
    .await?;
    Ok(true)
}

/// How a tested address is kept: an HMAC under the master key, hex (a guessable query secret
/// cannot be found by hashing guesses).
pub fn address_digest(svc: Service<'_>, address: &str) -> String {
    hex::encode(svc.master_key.mac("tested-address", address.as_bytes()))
}

/// Before Save changes: secret fields left blank take the secrets this session just tested,
/// if the address fields are still the ones they were tested against.
pub async fn reuse_tested(
    svc: Service<'_>,
    dest: DestinationKey,
    digest: &[u8],
    provider: Provider,
    values: &mut FormValues,
) -> Result<(), Error> {
    let Some(held) =
        store::siem::tested_secrets(svc.pool, dest, digest, provider.id(), chrono::Utc::now())
            .await?
    else {
        return Ok(());
    };
    let same_addresses = provider.address_fields().all(|field| {
        held.addresses.get(field.name).and_then(|v| v.as_str())
            == Some(address_digest(svc, values.get(field.name).map_or("", |v| v.trim())).as_str())
    });
    if !same_addresses {
        return Ok(());
    }
    let sealed = crate::crypto::Sealed {
        key_id: held.key_id,
        nonce: held.nonce,
        ciphertext: held.ciphertext,
    };
    let Some(secrets) = svc
        .master_key
        .open(&sealed, &tested_context(dest, provider, digest))
        .and_then(|plain| serde_json::from_slice::<BTreeMap<String, String>>(&plain).ok())
    else {
        return Ok(());
    };
    for (field, secret) in secrets {
        let blank = values.get(&field).is_none_or(|v| v.trim().is_empty());
        if blank {
            values.insert(field, secret);
        }
    }
    Ok(())
}
