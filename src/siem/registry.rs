//! The provider axis: what a provider module declares about itself ([`ProviderSpec`]) and the
//! handle the rest of the portal passes around ([`Provider`]). The settings page, the history,
//! the form check and the forwarder read everything provider-specific from here, so adding a
//! provider is one module plus one line in [`super::PROVIDERS`].

use std::fmt;

use serde_json::Value;

use super::config::{Context, FormCheck, FormValues, Secrets};
use super::SiemDestination;

/// How a field is shown and read.
#[derive(Clone, Copy, Debug)]
pub enum FieldKind {
    /// A line of text.
    Text,
    /// A URL (or host list): an address field when [`Field::address`] is set.
    Url,
    /// A write-only secret, typed by a person.
    Secret,
    /// Write-only lines (`Name: value` headers).
    SecretLines,
    /// A checkbox (`on` when ticked).
    Check,
    /// A choice from a list.
    Select(fn() -> Vec<Choice>),
    /// Never shown: stored by the provider itself (a generated signing secret).
    Internal,
}

/// One option of a [`FieldKind::Select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub value: &'static str,
    pub label: String,
    /// A URL that choosing it fills into the field after the select (the Datadog site's
    /// intake), for the page's script.
    pub fills: Option<String>,
}

impl Choice {
    /// A plain option.
    pub fn new(value: &'static str, label: impl Into<String>) -> Choice {
        Choice {
            value,
            label: label.into(),
            fills: None,
        }
    }
}

/// One field of a provider's form and storage.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Form field name (DESIGN.md: `<provider>_<field>`).
    pub name: &'static str,
    /// What people see, also in history entries.
    pub label: &'static str,
    pub kind: FieldKind,
    /// The help line under the field.
    pub hint: &'static str,
    /// The placeholder of an empty field with nothing stored.
    pub placeholder: &'static str,
    /// The value a new form starts with.
    pub default: &'static str,
    /// For a sealed value: the name it is stored under.
    pub sealed_as: Option<&'static str>,
    /// It decides where the secrets go: changing it requires the secrets again.
    pub address: bool,
}

impl Field {
    /// A plain field.
    pub const fn plain(
        name: &'static str,
        label: &'static str,
        kind: FieldKind,
        hint: &'static str,
    ) -> Field {
        Field {
            name,
            label,
            kind,
            hint,
            placeholder: "",
            default: "",
            sealed_as: None,
            address: false,
        }
    }

    /// A field that decides where the secrets are sent.
    pub const fn address(name: &'static str, label: &'static str, hint: &'static str) -> Field {
        Field {
            address: true,
            ..Field::plain(name, label, FieldKind::Url, hint)
        }
    }

    /// A secret a person types, sealed under `stored_as`.
    pub const fn secret(
        name: &'static str,
        label: &'static str,
        stored_as: &'static str,
        hint: &'static str,
    ) -> Field {
        Field {
            sealed_as: Some(stored_as),
            ..Field::plain(name, label, FieldKind::Secret, hint)
        }
    }

    /// A value the provider seals itself and never shows.
    pub const fn internal(
        name: &'static str,
        label: &'static str,
        stored_as: &'static str,
    ) -> Field {
        Field {
            sealed_as: Some(stored_as),
            ..Field::plain(name, label, FieldKind::Internal, "")
        }
    }

    /// The same field, deciding where the secrets are sent.
    pub const fn addressing(self) -> Field {
        Field {
            address: true,
            ..self
        }
    }

    /// The same field with a starting value.
    pub const fn with_default(self, default: &'static str) -> Field {
        Field { default, ..self }
    }

    /// The same field with a placeholder.
    pub const fn with_placeholder(self, placeholder: &'static str) -> Field {
        Field {
            placeholder,
            ..self
        }
    }

    /// The same field, sealed under `stored_as` (a URL whose query may carry a credential).
    pub const fn sealed(self, stored_as: &'static str) -> Field {
        Field {
            sealed_as: Some(stored_as),
            ..self
        }
    }

    /// Whether a person types this secret (as opposed to one the provider generates).
    pub fn is_typed_secret(&self) -> bool {
        matches!(self.kind, FieldKind::Secret | FieldKind::SecretLines)
    }
}

/// Everything the portal knows about one provider, declared by its module.
pub struct ProviderSpec {
    /// Stored in the database and sent by the form.
    pub id: &'static str,
    /// The name people see.
    pub label: &'static str,
    /// The form's fields, in page order (internal ones last).
    pub fields: &'static [Field],
    /// Reads the form (blank secrets fall back to the stored ones) into the provider's typed
    /// settings (serialised: what is stored), recording the secrets and every field error in
    /// `check`. A draft may be incomplete; its values are still checked.
    pub parse: fn(&mut FormCheck<'_>) -> Value,
    /// Builds the destination from typed settings and the secrets by storage name; an error
    /// says what is missing. Never generates or asks for anything: the forwarder calls it on
    /// stored settings.
    pub build: Build,
    /// The settings as the form shows them, by form field name.
    pub form: fn(&Value) -> FormValues,
    /// A secret the provider generates itself, if any.
    pub generated: Option<GeneratedSecret>,
}

/// A secret the provider generates itself (the webhook's signing secret): shown once, never
/// typed back. The page, the REST API and the forwarder's messages read it from the spec.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedSecret {
    /// Its form field (and the REST API's key for the one answer that carries it).
    pub field: &'static str,
    /// Form fields that act once per save (rotate, clear): not shown again after it.
    pub one_shot: &'static [&'static str],
    /// What to do when the stored one can no longer be read.
    pub unreadable_fix: &'static str,
}

/// Reads typed settings back; `Null` (nothing stored) is the default.
pub fn settings_of<T: serde::de::DeserializeOwned + Default>(value: &Value) -> Result<T, String> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value.clone())
        .map_err(|e| format!("the stored settings cannot be read ({e})"))
}

/// Typed settings as stored.
pub fn stored<T: serde::Serialize>(settings: &T) -> Value {
    serde_json::to_value(settings).unwrap_or(Value::Null)
}

/// A required value of stored settings, or what is missing.
pub fn needed<T>(value: Option<T>, what: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{what} is missing"))
}

/// A provider's destination builder: typed settings and secrets in, a destination or what is
/// missing out.
pub type Build = fn(&Value, &Secrets, Context<'_>) -> Result<Box<dyn SiemDestination>, String>;

/// A provider, as the portal passes it around: a handle on its [`ProviderSpec`].
#[derive(Clone, Copy)]
pub struct Provider(&'static ProviderSpec);

impl Provider {
    /// Every provider, in the order the select shows them.
    pub fn all() -> impl Iterator<Item = Provider> {
        super::PROVIDERS.iter().map(|spec| Provider(spec))
    }

    /// The handle on a module's spec.
    pub const fn of(spec: &'static ProviderSpec) -> Provider {
        Provider(spec)
    }

    /// The provider a new form starts with (the first of the registry: Datadog).
    pub fn first() -> Provider {
        Provider(super::PROVIDERS[0])
    }

    /// Parses a form or database value.
    pub fn parse(raw: &str) -> Result<Provider, String> {
        Provider::all()
            .find(|p| p.id() == raw.trim())
            .ok_or_else(|| "Choose a SIEM provider from the list.".to_owned())
    }

    /// The id stored in the database and sent by the form.
    pub fn id(self) -> &'static str {
        self.0.id
    }

    /// The name people see.
    pub fn label(self) -> &'static str {
        self.0.label
    }

    /// Its declaration.
    /// The secret this provider generates, if any.
    pub fn generated(self) -> Option<GeneratedSecret> {
        self.spec().generated
    }

    pub fn spec(self) -> &'static ProviderSpec {
        self.0
    }

    /// Its fields, in page order.
    pub fn fields(self) -> &'static [Field] {
        self.0.fields
    }

    /// The field named `name`.
    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.0.fields.iter().find(|f| f.name == name)
    }

    /// Fields whose values are sealed.
    pub fn sealed_fields(self) -> impl Iterator<Item = &'static Field> {
        self.0.fields.iter().filter(|f| f.sealed_as.is_some())
    }

    /// Secrets a person types (checked against address changes, held after a green test).
    pub fn typed_secrets(self) -> impl Iterator<Item = &'static Field> {
        self.0.fields.iter().filter(|f| f.is_typed_secret())
    }

    /// Fields that decide where the secrets are sent.
    pub fn address_fields(self) -> impl Iterator<Item = &'static Field> {
        self.0.fields.iter().filter(|f| f.address)
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Provider) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Provider {}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_round_trip_and_unknown_ones_are_refused() {
        for p in Provider::all() {
            assert_eq!(Provider::parse(p.id()), Ok(p));
        }
        assert!(Provider::parse("splunk-ish").is_err());
        assert!(Provider::parse("").is_err());
    }

    #[test]
    fn every_field_is_named_after_its_provider_and_declared_once() {
        let mut seen = std::collections::BTreeSet::new();
        for p in Provider::all() {
            for field in p.fields() {
                assert!(
                    field.name.starts_with(&format!("{}_", p.id())),
                    "{} of {}",
                    field.name,
                    p.id()
                );
                assert!(seen.insert(field.name), "{} twice", field.name);
            }
            // A provider that holds secrets says where they go.
            if p.typed_secrets().next().is_some() {
                assert!(p.address_fields().next().is_some(), "{}", p.id());
            }
        }
    }
}
