//! A subscription's SIEM destinations: each has a number within its subscription (1 is the
//! first, the one the seed's flow and `/siem` show) and an optional name.

use std::fmt;

use uuid::Uuid;

/// How many destinations a subscription may have at once.
pub const MAX_DESTINATIONS: usize = 5;

/// A destination's number within its subscription. Numbers are handed out in order and never
/// reused, so a removed destination's history never reads as another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct DestinationNo(i16);

impl DestinationNo {
    /// The first destination: the one every subscription has.
    pub const FIRST: DestinationNo = DestinationNo(1);

    /// A stored number (`None` below 1).
    pub fn new(n: i16) -> Option<Self> {
        (n >= 1).then_some(Self(n))
    }

    /// As stored.
    pub fn get(self) -> i16 {
        self.0
    }

    /// Reads a number from a path, query or form.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<i16>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| format!("`{text}` is not a destination number (1, 2, 3, …)."))
    }

    /// Whether this is the first destination.
    pub fn is_first(self) -> bool {
        self == Self::FIRST
    }

    /// The query parameter that names it on a portal URL (`destination=2`); none for the first,
    /// whose URLs stay as they were before there were several.
    pub fn query(self) -> Option<String> {
        (!self.is_first()).then(|| format!("destination={self}"))
    }

    /// A number read back from the store, whose check constraint keeps it at 1 or more.
    pub fn stored(n: i16) -> Self {
        Self::new(n).unwrap_or(Self::FIRST)
    }

    /// How the page, the emails and the history name a destination: the name given with its
    /// provider ("Archive (Kafka)"); unnamed, its provider, after the first with its number
    /// ("Destination 2 (Kafka)").
    pub fn label(self, name: Option<&str>, provider_label: &str) -> String {
        match name {
            Some(name) => format!("{name} ({provider_label})"),
            None if self.is_first() => provider_label.to_owned(),
            None => format!("Destination {self} ({provider_label})"),
        }
    }
}

impl fmt::Display for DestinationNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One destination of one subscription: what the settings and delivery rows are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestinationKey {
    pub subscription_id: Uuid,
    pub number: DestinationNo,
}

impl DestinationKey {
    /// The first destination of a subscription.
    pub fn first(subscription_id: Uuid) -> Self {
        Self {
            subscription_id,
            number: DestinationNo::FIRST,
        }
    }

    /// Destination `number` of a subscription.
    pub fn new(subscription_id: Uuid, number: DestinationNo) -> Self {
        Self {
            subscription_id,
            number,
        }
    }

    /// A key read back from the store, whose check constraint keeps numbers at 1 or more.
    pub fn stored(subscription_id: Uuid, number: i16) -> Self {
        Self::new(subscription_id, DestinationNo::stored(number))
    }

    /// The number as stored.
    pub fn no(self) -> i16 {
        self.number.get()
    }

    /// What begins the associated data of everything sealed for it: `subscription` for the
    /// first destination (what secrets were sealed with before there were several), then
    /// `subscription/number`.
    pub fn sealing_prefix(self) -> String {
        if self.number.is_first() {
            self.subscription_id.to_string()
        } else {
            format!("{}/{}", self.subscription_id, self.number)
        }
    }
}

/// A destination's name as administrators give it ("SOC Sentinel", "Archive"): 1 to 60
/// characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationName(String);

impl DestinationName {
    /// The longest name.
    pub const MAX_CHARS: usize = 60;

    /// Reads a name; blank is `Ok(None)` (the provider's label stands in).
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let name = text.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "The destination name is {} characters long; use at most {}.",
                name.chars().count(),
                Self::MAX_CHARS
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(
                "The destination name cannot contain line breaks or control characters.".to_owned(),
            );
        }
        Ok(Some(Self(name.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_numbers_start_at_one() {
        assert_eq!(DestinationNo::parse("2").map(DestinationNo::get), Ok(2));
        assert!(DestinationNo::parse("0").is_err());
        assert!(DestinationNo::parse("-1").is_err());
        assert!(DestinationNo::parse("first").is_err());
        assert!(DestinationNo::parse("99999").is_err());
    }

    #[test]
    fn destination_names_are_trimmed_bounded_and_single_line() {
        assert_eq!(DestinationName::parse("  "), Ok(None));
        assert_eq!(
            DestinationName::parse(" SOC Sentinel ")
                .ok()
                .flatten()
                .map(|n| n.as_str().to_owned()),
            Some("SOC Sentinel".to_owned())
        );
        assert!(DestinationName::parse(&"x".repeat(61)).is_err());
        assert!(DestinationName::parse("a\nb").is_err());
    }
}
