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

#[cfg(test)]
mod tests {
    use super::*;

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
