//! A credential's text, held the one way every credential type of ours holds it: in a
//! [`secrecy::SecretString`] (wiped from memory when dropped, handed out only through an
//! explicit `expose_secret`), compared in constant time, and printed as `****` followed by at
//! most its last four characters, so that a key type can derive `Debug`, `Clone` and `Eq`
//! without a redaction of its own.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

/// Below this many characters nothing of a secret is shown: four would be half of it.
const SHOWN_FROM_CHARS: usize = 8;

/// A credential's text.
#[derive(Clone)]
pub struct Secret {
    text: SecretString,
    /// Whether its end may be shown (keys and tokens) or nothing at all (passwords).
    tail_shown: bool,
}

impl Secret {
    /// A key or token: its last four characters identify it on the page and in `Debug`
    /// (none when it is shorter than eight).
    pub fn new(text: impl Into<String>) -> Secret {
        Secret {
            text: SecretString::from(text.into()),
            tail_shown: true,
        }
    }

    /// A password: nothing of it is ever shown.
    pub fn password(text: impl Into<String>) -> Secret {
        Secret {
            text: SecretString::from(text.into()),
            tail_shown: false,
        }
    }

    /// The text, for the one request header or seal that needs it.
    pub fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }

    /// Its last four characters ("" for a password or a text shorter than eight).
    pub fn last4(&self) -> &str {
        let text = self.text.expose_secret();
        let count = text.chars().count();
        if !self.tail_shown || count < SHOWN_FROM_CHARS {
            return "";
        }
        let start = text
            .char_indices()
            .nth(count - 4)
            .map_or(text.len(), |(i, _)| i);
        &text[start..]
    }

    /// How many characters it has.
    pub fn chars(&self) -> usize {
        self.text.expose_secret().chars().count()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        let (a, b) = (self.text.expose_secret(), other.text.expose_secret());
        a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "****{}", self.last4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prints_its_last_four_a_password_and_a_short_text_nothing() {
        assert_eq!(format!("{:?}", Secret::new("0123456789abcdef")), "****cdef");
        assert_eq!(format!("{:?}", Secret::new("short")), "****");
        assert_eq!(
            format!("{:?}", Secret::password("a long password!")),
            "****"
        );
        assert_eq!(Secret::new("ключ-длинный-ЁЖЗИ").last4(), "ЁЖЗИ");
    }

    #[test]
    fn secrets_compare_by_their_text() {
        assert_eq!(Secret::new("same text"), Secret::new("same text"));
        assert_ne!(Secret::new("same text"), Secret::new("same texT"));
        assert_ne!(Secret::new("same"), Secret::new("same text"));
    }
}
