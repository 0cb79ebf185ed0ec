//! The SIEM providers a subscription can send its audit logs to.

/// A SIEM provider. Adding one means a variant here and a module in `siem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Datadog Logs.
    Datadog,
}

impl Provider {
    /// Every provider, in the order the select shows them.
    pub const ALL: [Provider; 1] = [Provider::Datadog];

    /// The id stored in the database and sent by the form.
    pub fn id(self) -> &'static str {
        match self {
            Provider::Datadog => "datadog",
        }
    }

    /// The name people see.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Datadog => "Datadog",
        }
    }

    /// Parses a form or database value.
    pub fn parse(raw: &str) -> Result<Provider, String> {
        Provider::ALL
            .into_iter()
            .find(|p| p.id() == raw.trim())
            .ok_or_else(|| "Choose a SIEM provider from the list.".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_round_trip_and_unknown_ones_are_refused() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.id()), Ok(p));
        }
        assert!(Provider::parse("splunk-ish").is_err());
        assert!(Provider::parse("").is_err());
    }
}
