//! The provider axis, in one place: what a provider module declares about itself
//! ([`ProviderSpec`]), the handle the rest of the portal passes around ([`Provider`]), and the
//! provider-independent form check ([`validate`] over a [`FormCheck`]) that runs a provider's
//! own parser, collects every field error at once, the typed settings to store, the secrets to
//! seal, and the destination the values describe ([`ProviderSpec::build`], the same function
//! the forwarder builds its destination with from stored settings). Pure: nothing here reads or
//! writes the store. Adding a provider is its folder plus one line in [`super::PROVIDERS`].
//!
//! Form field names are the contract of DESIGN.md (`datadog_site`, `datadog_url`,
//! `datadog_api_key`, and `<provider>_<field>` for the others). Secrets are write-only: a blank
//! secret field keeps the stored secret.

use std::{collections::BTreeMap, fmt, sync::Arc};

use crate::domain::destination::DestinationKey;
use serde_json::Value;

use super::{
    egress::{EgressPolicy, Lookup, SystemLookup},
    oauth::TokenCache,
    SiemDestination,
};

/// How a field is shown and read.
#[derive(Clone, Copy, Debug)]
pub enum FieldKind {
    /// A line of text.
    Text,
    /// A URL (or host list): an address field when [`Field::address`] is set.
    Url,
    /// A write-only secret, typed by a person.
    Secret,
    /// Write-only lines (`Name: value` headers, a PEM private key).
    SecretLines,
    /// Lines shown as stored (a PEM certificate).
    Lines,
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
    /// Values that choosing it fills into other fields (field name, value), for the page's
    /// script: a Datadog site fills in its intake and API URLs. An option that fills nothing
    /// (a custom URL) moves the focus to the first field the others fill.
    pub fills: Vec<(&'static str, String)>,
}

impl Choice {
    /// A plain option.
    pub fn new(value: &'static str, label: impl Into<String>) -> Choice {
        Choice {
            value,
            label: label.into(),
            fills: Vec::new(),
        }
    }

    /// The same option, filling `value` into the field `field` when chosen.
    pub fn filling(mut self, field: &'static str, value: impl Into<String>) -> Choice {
        self.fills.push((field, value.into()));
        self
    }

    /// What it fills, as the JSON object the page's script reads (`None` when nothing).
    pub fn fills_json(&self) -> Option<String> {
        (!self.fills.is_empty()).then(|| {
            let map: serde_json::Map<String, Value> = self
                .fills
                .iter()
                .map(|(field, value)| ((*field).to_owned(), Value::String(value.clone())))
                .collect();
            Value::Object(map).to_string()
        })
    }
}

/// The field an option of `choices` that fills nothing should focus: the first one filled.
pub fn fills_focus(choices: &[Choice]) -> Option<&'static str> {
    choices
        .iter()
        .find_map(|c| c.fills.first().map(|(field, _)| *field))
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
    /// Events the forwarder reads, sends and settles at a time: a range is one unit of
    /// progress (Datadog: its intake's 1,000 logs per request, so a range is one request).
    pub range_events: i64,
    /// Where the events page's alert queries open in the SIEM's own search, from the stored
    /// settings (`Null` when none), if the SIEM has such a page.
    pub explorer: Option<fn(&Value) -> Explorer>,
    /// Buttons of this provider beside Test Connection and Save changes (Datadog: Create
    /// monitors), each a `POST` route under the settings page.
    pub actions: &'static [Action],
}

/// The range size of a provider whose requests have no tighter limit of their own.
pub const RANGE_EVENTS: i64 = 1000;

/// Where an alert query opens in the SIEM's own search page.
pub struct Explorer {
    /// The sentence under the queries that says where the links go.
    pub where_links_go: String,
    /// The link's text.
    pub button: &'static str,
    /// The search page for a query.
    pub link: Box<dyn Fn(&str) -> String + Send + Sync>,
}

/// A provider's own button on the settings page.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    /// The route under `/subscriptions/{id}/settings/` it posts to.
    pub route: &'static str,
    /// The button's id and text.
    pub id: &'static str,
    pub label: &'static str,
    /// What it does, beside it.
    pub hint: &'static str,
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

/// Why typed settings and secrets give no destination. Its text completes "The … settings
/// cannot be used: …" in the forwarder's reasons, and is the form's error as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A required value is not there (an incomplete draft, saved with export off).
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The stored settings do not read back (written by another version).
    #[error("the stored settings cannot be read ({0})")]
    Unreadable(String),
    /// A value is there but no longer valid.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    /// A value that does not parse, with its parser's message.
    pub fn invalid(error: impl fmt::Display) -> BuildError {
        BuildError::Invalid(error.to_string())
    }
}

/// Reads typed settings back; `Null` (nothing stored) is the default.
pub fn settings_of<T: serde::de::DeserializeOwned + Default>(
    value: &Value,
) -> Result<T, BuildError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value.clone()).map_err(|e| BuildError::Unreadable(e.to_string()))
}

/// Typed settings as stored.
pub fn stored<T: serde::Serialize>(settings: &T) -> Value {
    serde_json::to_value(settings).unwrap_or(Value::Null)
}

/// A required value of stored settings, or what is missing.
pub fn needed<T>(value: Option<T>, what: &'static str) -> Result<T, BuildError> {
    value.ok_or(BuildError::Missing(what))
}

/// A provider's destination builder: typed settings and secrets in, a destination or what is
/// missing out.
pub type Build = fn(&Value, &Secrets, Context<'_>) -> Result<Box<dyn SiemDestination>, BuildError>;

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

    /// The secret this provider generates, if any.
    pub fn generated(self) -> Option<GeneratedSecret> {
        self.spec().generated
    }

    /// Its declaration.
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

/// Raw form values by field name.
pub type FormValues = BTreeMap<String, String>;

/// One message per field name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    /// Adds every error of `other` (a field's first error stays).
    pub fn extend(&mut self, other: FieldErrors) {
        for (field, message) in other.0 {
            self.add(&field, message);
        }
    }

    /// Records an error for `field` (the first one stays).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// The error of `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// How many fields are wrong.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// The associated data that binds a sealed secret to its destination, provider and name. The
/// first destination's is what every secret was sealed with before destinations had numbers.
pub fn secret_context(dest: DestinationKey, provider: Provider, name: &str) -> String {
    format!("{}/{}/{name}", dest.sealing_prefix(), provider.id())
}

/// A stored secret as the page and the forwarder see it.
#[derive(Clone)]
pub enum StoredSecret {
    /// Unsealed.
    Usable(String, String),
    /// Present but it no longer opens (another master key).
    Unreadable(String),
}

impl StoredSecret {
    /// The last 4 characters.
    pub fn hint(&self) -> &str {
        match self {
            StoredSecret::Usable(_, hint) | StoredSecret::Unreadable(hint) => hint,
        }
    }

    /// The value, when usable.
    pub fn usable(&self) -> Option<&str> {
        match self {
            StoredSecret::Usable(v, _) => Some(v),
            StoredSecret::Unreadable(_) => None,
        }
    }
}

/// What is stored for one provider of one subscription.
#[derive(Clone, Default)]
pub struct StoredProvider {
    /// The provider's typed settings, as stored (`Null` when none).
    pub settings: Value,
    /// The same settings as the form shows them, by form field name.
    pub fields: BTreeMap<String, String>,
    /// Secrets by form field name.
    pub secrets: BTreeMap<String, StoredSecret>,
    /// When secrets expire, by form field name (only those given a date).
    pub expiries: BTreeMap<String, chrono::NaiveDate>,
}

impl StoredProvider {
    /// The secrets that open, by the name they are stored under: what a destination is built
    /// with.
    pub fn usable_secrets(&self, provider: Provider) -> Secrets {
        provider
            .sealed_fields()
            .filter_map(|field| {
                let value = self.secrets.get(field.name)?.usable()?;
                Some((field.sealed_as?.to_owned(), value.to_owned()))
            })
            .collect()
    }
}

/// Secret values by the name they are stored under.
pub type Secrets = BTreeMap<String, String>;

/// Parts every destination of a process shares.
#[derive(Clone)]
pub struct Shared {
    /// OAuth2 tokens for Sentinel, cached until shortly before they expire.
    pub tokens: Arc<TokenCache>,
    /// Name resolution for clients that do not go through the HTTP client (Kafka), judged by
    /// the same egress policy.
    pub lookup: Arc<dyn Lookup>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            tokens: Arc::default(),
            lookup: Arc::new(SystemLookup),
        }
    }
}

/// What a destination is built with besides its settings.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The name of this deployment, sent as the logs' host name.
    pub hostname: &'a str,
    pub shared: &'a Shared,
}

/// The form checked against the rules of its provider.
pub struct Validated {
    /// The provider.
    pub provider: Provider,
    /// The destination the values describe, when every required value is there.
    pub destination: Option<Box<dyn SiemDestination>>,
    /// The typed settings to store.
    pub settings: Value,
    /// The same settings as the form shows them (history entries compare these).
    pub fields: BTreeMap<String, String>,
    /// Newly typed secrets to seal: (storage name, value, hint).
    pub new_secrets: Vec<(&'static str, String, String)>,
    /// Secrets to delete (storage names).
    pub removed_secrets: Vec<&'static str>,
    /// A signing secret generated by this check, to show once.
    pub generated_secret: Option<String>,
}

/// The state of one form check, handed to the provider's parser.
pub struct FormCheck<'a> {
    form: &'a FormValues,
    /// What is stored (blank secret fields fall back to it).
    pub stored: &'a StoredProvider,
    pub egress: &'a EgressPolicy,
    /// A usable configuration is demanded (Test Connection, or saving with export on).
    pub complete: bool,
    pub context: Context<'a>,
    pub errors: FieldErrors,
    pub out: Validated,
    /// The secrets the destination is built with (typed now or kept), by storage name.
    pub secrets: Secrets,
}

impl FormCheck<'_> {
    /// A field's value, trimmed ("" when absent).
    pub fn get(&self, name: &str) -> String {
        self.form
            .get(name)
            .map(|v| v.trim())
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether a checkbox is ticked.
    pub fn ticked(&self, name: &str) -> bool {
        self.form.get(name).is_some_and(|v| v == "on")
    }

    /// Records an error for `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.add(field, message);
    }

    /// Builds the destination with `value` as the secret stored under `stored_as`.
    pub fn use_secret(&mut self, stored_as: &str, value: impl Into<String>) {
        self.secrets.insert(stored_as.to_owned(), value.into());
    }

    /// A stored plain value.
    pub fn stored_field(&self, field: &str) -> Option<&str> {
        self.stored.fields.get(field).map(String::as_str)
    }

    /// A stored secret that still opens.
    pub fn stored_secret(&self, field: &str) -> Option<&str> {
        self.stored
            .secrets
            .get(field)
            .and_then(StoredSecret::usable)
    }

    /// Seals `value` under `stored_as` on save, and builds the destination with it.
    pub fn seal(&mut self, stored_as: &'static str, value: String, hint: String) {
        self.use_secret(stored_as, value.clone());
        self.out.new_secrets.push((stored_as, value, hint));
    }

    /// Deletes the secret stored under `stored_as` on save.
    pub fn unseal(&mut self, stored_as: &'static str) {
        self.out.removed_secrets.push(stored_as);
    }

    /// A required field, parsed; an error when missing (and a value is demanded) or wrong.
    pub fn required<T>(
        &mut self,
        field: &str,
        missing: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.get(field);
        self.required_text(&text, field, missing, parse)
    }

    /// [`FormCheck::required`] over a value that did not come from the form as is.
    pub fn required_text<T>(
        &mut self,
        text: &str,
        field: &str,
        missing: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        if text.is_empty() {
            if self.complete {
                self.errors.add(field, missing);
            }
            return None;
        }
        parse(text).map_err(|e| self.errors.add(field, e)).ok()
    }

    /// An optional field: `None` when blank.
    pub fn optional<T>(
        &mut self,
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.get(field);
        if text.is_empty() {
            return None;
        }
        parse(&text).map_err(|e| self.errors.add(field, e)).ok()
    }

    /// A secret typed now (sealed on save) or kept from storage, parsed into
    /// `(value, text to seal, hint)`. `None`, with an error when a value is demanded, when it
    /// is missing, wrong or no longer readable.
    pub fn secret<T>(
        &mut self,
        field: &str,
        missing: &str,
        parse: impl Fn(&str) -> Result<(T, String, String), String>,
    ) -> Option<T> {
        let typed = self.get(field);
        let stored_as = self.provider().field(field).and_then(|f| f.sealed_as);
        if !typed.is_empty() {
            return match parse(&typed) {
                Ok((value, text, hint)) => {
                    if let Some(stored_as) = stored_as {
                        self.seal(stored_as, text, hint);
                    }
                    Some(value)
                }
                Err(e) => {
                    self.errors.add(field, e);
                    None
                }
            };
        }
        let complete = self.complete;
        let problem = match self.stored.secrets.get(field) {
            Some(StoredSecret::Usable(raw, _)) => match parse(raw) {
                Ok((value, text, _)) => {
                    if let Some(stored_as) = stored_as {
                        self.use_secret(stored_as, text);
                    }
                    return Some(value);
                }
                Err(_) => "The stored value is no longer valid; enter it again.",
            },
            Some(StoredSecret::Unreadable(_)) => {
                "The stored value can no longer be read (the master key changed); enter it again."
            }
            None => missing,
        };
        if complete {
            self.errors.add(field, problem);
        }
        None
    }

    /// The provider being checked.
    pub fn provider(&self) -> Provider {
        self.out.provider
    }
}

/// Checks `form` for `provider`; `complete` demands a usable configuration (Test Connection,
/// or saving with export on). Blank secret fields fall back to `stored`.
pub fn validate(
    provider: Provider,
    form: &FormValues,
    stored: &StoredProvider,
    egress: &EgressPolicy,
    complete: bool,
    context: Context<'_>,
) -> Result<Validated, FieldErrors> {
    let mut check = FormCheck {
        form,
        stored,
        egress,
        complete,
        context,
        errors: FieldErrors::default(),
        out: Validated {
            provider,
            destination: None,
            settings: Value::Null,
            fields: BTreeMap::new(),
            new_secrets: Vec::new(),
            removed_secrets: Vec::new(),
            generated_secret: None,
        },
        secrets: Secrets::new(),
    };
    let spec = provider.spec();
    let settings = (spec.parse)(&mut check);
    check.out.fields = (spec.form)(&settings);
    keep_secrets_with_their_address(&mut check);
    if check.errors.count() > 0 {
        return Err(check.errors);
    }
    match (spec.build)(&settings, &check.secrets, context) {
        Ok(destination) => check.out.destination = Some(destination),
        // Saving an incomplete draft with export off is allowed; a complete one must build.
        Err(reason) if complete => {
            check.errors.add("provider", reason.to_string());
            return Err(check.errors);
        }
        Err(_) => {}
    }
    check.out.settings = settings;
    Ok(check.out)
}

/// A stored secret is only ever sent to the address it was saved with: when an address field
/// changes, every stored secret the form leaves blank (and does not clear) must be entered
/// again.
fn keep_secrets_with_their_address(check: &mut FormCheck<'_>) {
    let provider = check.provider();
    let value = |fields: &BTreeMap<String, String>, name: &str| {
        fields.get(name).cloned().unwrap_or_default()
    };
    let Some(changed) = provider
        .address_fields()
        .find(|f| value(&check.out.fields, f.name) != value(&check.stored.fields, f.name))
    else {
        return;
    };
    for secret in provider.typed_secrets() {
        let typed = !check.get(secret.name).is_empty();
        let cleared = secret
            .sealed_as
            .is_some_and(|name| check.out.removed_secrets.contains(&name));
        if !typed && !cleared && check.stored.secrets.contains_key(secret.name) {
            check.error(
                secret.name,
                format!(
                    "The {} changed, so enter the {} again: a stored secret is only ever sent to the address it was saved with.",
                    changed.label,
                    in_sentence(secret.label)
                ),
            );
        }
    }
}

/// A label inside a sentence: "Extra headers" → "extra headers", "API key" stays.
fn in_sentence(label: &str) -> String {
    let mut chars = label.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if second.is_lowercase() => {
            format!("{}{}", first.to_lowercase(), &label[first.len_utf8()..])
        }
        _ => label.to_owned(),
    }
}

/// A URL as the page and the history may show it: every query value replaced by `…`.
pub fn hide_query_values(url: &url::Url) -> String {
    let Some(query) = url.query() else {
        return url.as_str().to_owned();
    };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=…"),
            None => "…".to_owned(),
        })
        .collect();
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    format!("{}?{}", shown.as_str(), hidden.join("&"))
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
    fn the_events_page_has_a_search_page_to_link_to_and_every_range_holds_events() {
        assert!(Provider::all().any(|p| p.spec().explorer.is_some()));
        for p in Provider::all() {
            assert!(p.spec().range_events > 0, "{}", p.id());
        }
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
