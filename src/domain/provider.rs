//! The SIEM providers a subscription can send its audit logs to.

/// A SIEM provider. Adding one means a variant here and a module in `siem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Datadog Logs.
    Datadog,
    /// Splunk HTTP Event Collector.
    Splunk,
    /// Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
    Sentinel,
    /// CrowdStrike Falcon LogScale through its HEC-compatible endpoint.
    LogScale,
    /// Any HTTPS receiver, signed per Standard Webhooks.
    Webhook,
}

impl Provider {
    /// Every provider, in the order the select shows them.
    pub const ALL: [Provider; 5] = [
        Provider::Datadog,
        Provider::Splunk,
        Provider::Sentinel,
        Provider::LogScale,
        Provider::Webhook,
    ];

    /// The id stored in the database and sent by the form.
    pub fn id(self) -> &'static str {
        match self {
            Provider::Datadog => "datadog",
            Provider::Splunk => "splunk",
            Provider::Sentinel => "sentinel",
            Provider::LogScale => "logscale",
            Provider::Webhook => "webhook",
        }
    }

    /// The name people see.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Datadog => "Datadog",
            Provider::Splunk => "Splunk",
            Provider::Sentinel => "Microsoft Sentinel",
            Provider::LogScale => "CrowdStrike Falcon LogScale",
            Provider::Webhook => "Signed webhook",
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
