//! Accounts: email addresses, passwords, roles and subscription names.

use std::fmt;

use super::secret::Secret;

/// Shortest password accepted for a new account.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (argon2 cost grows with input; this is far above any real one).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A loose syntactic check: one `@`, something on both sides, no spaces, a dot or `localhost`
/// in the domain. Whether the mailbox exists is for the mail server to say.
pub fn looks_like_mail_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && s.len() <= 254
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && (domain.contains('.') || domain == "localhost")
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// A user's email address, trimmed and lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses and normalises an email address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("Enter an email address.".into());
        }
        if !looks_like_mail_address(&email) {
            return Err("Enter an email address like name@example.com.".into());
        }
        Ok(Self(email))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password that meets the policy. Never printed.
#[derive(Debug)]
pub struct NewPassword(Secret);

impl NewPassword {
    /// Checks the length policy (NIST 800-63B: length over composition rules).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(format!(
                "Use at least {MIN_PASSWORD_CHARS} characters; a few unrelated words make a good password."
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(format!("Use at most {MAX_PASSWORD_CHARS} characters."));
        }
        Ok(Self(Secret::password(raw)))
    }

    /// The password, for hashing only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// What a member may do in a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Changes settings.
    Admin,
    /// Sees settings; every control is disabled.
    Reader,
}

impl Role {
    /// Parses `admin` or `reader`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "admin" => Ok(Self::Admin),
            "reader" => Ok(Self::Reader),
            other => Err(format!("role `{other}` is not one of: admin, reader")),
        }
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
        }
    }

    /// Whether this role may change settings.
    pub fn is_admin(self) -> bool {
        self == Self::Admin
    }
}

/// A subscription's display name: 1 to 100 printable characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionName(String);

impl SubscriptionName {
    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("Enter a name for the subscription.".into());
        }
        if name.chars().count() > 100 {
            return Err("Use at most 100 characters.".into());
        }
        if name.chars().any(char::is_control) {
            return Err("Use printable characters only.".into());
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A personal API token's scope as typed (`read` or `write`; empty: `write`, what a token could
/// always do): whether it may change settings.
pub fn parse_token_scope(raw: &str) -> Result<bool, String> {
    match raw.trim() {
        "" | "write" => Ok(true),
        "read" => Ok(false),
        other => Err(format!(
            "`{other}` is not a scope: choose read (GET only) or write (read and change)."
        )),
    }
}

/// The last day a personal API token works, as typed (`YYYY-MM-DD`, today or later, within
/// two years; empty: until revoked): the moment it stops, the end of that day in UTC.
pub fn parse_token_expiry(
    raw: &str,
    today: chrono::NaiveDate,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let wrong = || {
        format!(
            "Give the last day the token works as YYYY-MM-DD, from today ({today}) to two years ahead, or leave it empty so it works until revoked."
        )
    };
    let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| wrong())?;
    let latest = today
        .checked_add_months(chrono::Months::new(24))
        .unwrap_or(today);
    if day < today || day > latest {
        return Err(wrong());
    }
    let end = day
        .checked_add_days(chrono::Days::new(1))
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .ok_or_else(wrong)?;
    Ok(Some(end.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expires_at_the_end_of_its_last_day_from_today_to_two_years_ahead() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        let end = parse_token_expiry("2026-03-04", today).unwrap().unwrap();
        assert_eq!(end.to_rfc3339(), "2026-03-05T00:00:00+00:00");
        assert_eq!(parse_token_expiry(" ", today), Ok(None));
        assert!(parse_token_expiry("2026-03-03", today).is_err());
        assert!(parse_token_expiry("2028-03-05", today).is_err());
        assert!(parse_token_expiry("tomorrow", today).is_err());
        assert_eq!(parse_token_scope(""), Ok(true));
        assert_eq!(parse_token_scope("read"), Ok(false));
        assert!(parse_token_scope("admin").is_err());
    }

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in ["", "alice", "a@b", "a b@c.d", "@x.io", "a@.io"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse("admin@localhost").is_ok());
    }

    #[test]
    fn password_policy_is_length() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse("twelve chars").is_ok());
        assert!(!format!("{:?}", NewPassword::parse("twelve chars").unwrap()).contains("twelve"));
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Admin, Role::Reader] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("owner").is_err());
    }
}
