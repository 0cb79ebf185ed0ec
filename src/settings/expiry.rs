//! The "expires on" dates of a provider's secrets, as the page and the API send them.

use crate::siem::{
    provider::FieldKind,
    provider::{FieldErrors, FormValues},
    Provider,
};

/// The form field of a secret's "expires on" date.
pub fn expiry_field(secret_field: &str) -> String {
    format!("{secret_field}_expires_on")
}

/// The secret fields of `provider` that may carry an "expires on" date.
pub fn dated_secret_fields(
    provider: Provider,
) -> impl Iterator<Item = &'static crate::siem::provider::Field> {
    provider
        .fields()
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Secret) && f.sealed_as.is_some())
}

/// What a date field left out of the input means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbsentExpiry {
    /// The page always shows the fields: one not sent is blank, and clears the date.
    Clears,
    /// The REST API: a key left out keeps the stored date.
    Unchanged,
}

/// The "expires on" dates typed for `provider`'s sealed secrets: (stored name, label, date).
/// A blank date clears it; a date that is not a date, or has passed, is an error.
pub fn parse_expiries(
    provider: Provider,
    values: &FormValues,
    absent: AbsentExpiry,
    today: chrono::NaiveDate,
    errors: &mut FieldErrors,
) -> Vec<(&'static str, &'static str, Option<chrono::NaiveDate>)> {
    let mut out = Vec::new();
    for field in dated_secret_fields(provider) {
        let Some(stored_as) = field.sealed_as else {
            continue;
        };
        let name = expiry_field(field.name);
        let raw = match values.get(&name) {
            None if absent == AbsentExpiry::Unchanged => continue,
            sent => sent.map(|v| v.trim()).unwrap_or_default(),
        };
        if raw.is_empty() {
            out.push((stored_as, field.label, None));
            continue;
        }
        match chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            Ok(date) if date <= today => errors.add(
                &name,
                "That date has passed: the credential has expired. Enter the new one and its new expiry date.",
            ),
            Ok(date) => out.push((stored_as, field.label, Some(date))),
            Err(_) => errors.add(&name, format!("`{raw}` is not a date such as 2027-06-30.")),
        }
    }
    out
}
