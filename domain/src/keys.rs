//! The one vocabulary of effects: idempotency keys (built, printed and parsed only here), what
//! each key acts on, and the kinds and outcomes the journal records.
//!
//! Keys are stable across versions: a rebuild re-raises the intents of old events under the keys
//! they had, and `ledger.intents` ignores a key it already holds. Ids inside keys are escaped
//! (`%`, `:`, `/`, `#` as `%25`, `%3A`, `%2F`, `%23`), so any id round-trips; Stripe's ids never
//! contain those characters, so their keys read exactly as before escaping existed.
//!
//! | key | effect |
//! | --- | --- |
//! | `instance:<sub>:<position>` | the instance a subscription's event asked for |
//! | `grace:<sub>:<deadline>` / `restore:<sub>:<deadline>` | teardown by a grace deadline, and the re-creation after payment |
//! | `token:<cus>:<position>[/<n>]` | a token issued (`/<n>`: the customer's n-th, when the intent's own key was used) |
//! | `revoke:<token>`, `retier:<token>:<tier>`, `renew:<token>:<until>` | changes of a live token |
//! | `email:welcome:<sub>`, `email:canceled:<sub>`, `email:payment_failed:<invoice>` | mails the fold asked for |
//! | `email:<token>` | the mail carrying a token |
//! | `email:alert:<key>[#<n>]` | the admin alert of the n-th failure of `<key>` |
//! | `fetch:checkout_items:<cs>`, `fetch:invoice_lines:<in>` | a part an event left out, fetched from Stripe and appended as a fact |

use std::fmt;
use std::str::FromStr;

use crate::fetched::Part;

/// What an effect acts on: the subscription or the customer it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `sub_...`.
    Subscription(String),
    /// `cus_...`.
    Customer(String),
    /// `evt_...`: an event whose object is not known yet (a thin event's invoice or session).
    Event(String),
}

impl Subject {
    /// The id.
    pub fn id(&self) -> &str {
        match self {
            Self::Subscription(id) | Self::Customer(id) | Self::Event(id) => id,
        }
    }

    /// Stored in `subject_type`.
    pub fn type_str(&self) -> &'static str {
        match self {
            Self::Subscription(_) => "subscription",
            Self::Customer(_) => "customer",
            Self::Event(_) => "event",
        }
    }

    /// From the `subject_type` and `subject` columns.
    pub fn from_columns(subject_type: &str, id: String) -> Option<Self> {
        match subject_type {
            "subscription" => Some(Self::Subscription(id)),
            "customer" => Some(Self::Customer(id)),
            "event" => Some(Self::Event(id)),
            _ => None,
        }
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses a stored value.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// `ledger.intents.kind`: what the fold asked for.
    IntentKind {
        /// An instance to provision, update or tear down.
        Instance => "instance",
        /// A customer's token to issue or revoke.
        Token => "token",
        /// A mail.
        Email => "email",
        /// A part of an object to fetch from Stripe.
        Fetch => "fetch",
    }
);

text_enum!(
    /// `ledger.effects.kind`: what an attempt did.
    EffectKind {
        /// `POST /provision`.
        Provision => "provision",
        /// `PUT /update`.
        Update => "update",
        /// `DELETE /deprovision`.
        Deprovision => "deprovision",
        /// A token issued, revoked, re-tiered or renewed.
        Token => "token",
        /// A mail to a customer (a token mail included).
        Email => "email",
        /// A mail to the admin about an effect that failed for good.
        Alert => "alert",
        /// A part of an object fetched from Stripe and appended to the log.
        Fetch => "fetch",
    }
);

text_enum!(
    /// `ledger.effects.outcome`.
    Outcome {
        /// Done; ends the effect.
        Succeeded => "succeeded",
        /// Another attempt follows (or an operator re-armed a failed effect: attempt 0).
        Retry => "retry",
        /// Failed for good; ends the effect (an admin is alerted).
        Failed => "failed",
        /// Not needed any more; ends the effect.
        Skipped => "skipped",
        /// A mail handed to SMTP, its answer not recorded yet: the latest row only when the
        /// dispatcher stopped in between (delivery unknown). Keeps the effect pending.
        Sending => "sending",
    }
);

impl EffectKind {
    /// True for the provisioner's calls.
    pub fn is_instance(self) -> bool {
        matches!(self, Self::Provision | Self::Update | Self::Deprovision)
    }
}

/// A token's key: the issuing effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The customer.
    pub customer: String,
    /// Position of the token intent it answers (0: none known).
    pub position: i64,
    /// Set when the intent's own key was already used: the customer's n-th token.
    pub reissue: Option<i64>,
}

/// A mail's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MailKey {
    /// Welcome, once per subscription.
    Welcome {
        /// The subscription.
        subscription: String,
    },
    /// Cancellation notice, once per subscription.
    Canceled {
        /// The subscription.
        subscription: String,
    },
    /// Dunning mail, once per failed invoice (the intent names the subscription).
    PaymentFailed {
        /// The invoice.
        invoice: String,
    },
    /// The mail carrying a token.
    Token(TokenKey),
    /// The admin alert of the `nth` failure of `failed` (never itself an alert).
    Alert {
        /// The effect that failed for good.
        failed: Box<EffectKey>,
        /// Which failure of that key (1 for the first).
        nth: i64,
    },
}

/// What a fetch completes: a part and the id it is keyed by (the session or invoice of a list;
/// the event whose subscription period or thin object is fetched).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchKey {
    /// What is fetched.
    pub part: Part,
    /// `cs_`, `in_` or `evt_`.
    pub id: String,
}

/// The name of each part in a fetch key (`fetch:<name>:<id>`).
const FETCH_PARTS: [(Part, &str); 4] = [
    (Part::CheckoutLineItems, "checkout_items"),
    (Part::InvoiceLines, "invoice_lines"),
    (Part::SubscriptionPeriod, "subscription_period"),
    (Part::ThinObject, "thin_object"),
];

impl FetchKey {
    /// The fetch of `part` keyed by `id`.
    pub fn new(part: Part, id: impl Into<String>) -> Self {
        Self { part, id: id.into() }
    }

    fn name(&self) -> &'static str {
        FETCH_PARTS.iter().find(|(part, _)| *part == self.part).map_or("unknown", |(_, name)| name)
    }
}

/// An effect's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EffectKey {
    /// The instance an event asked for.
    Instance {
        /// The subscription.
        subscription: String,
        /// The event's position.
        position: i64,
    },
    /// Teardown by a grace deadline.
    Grace {
        /// The subscription.
        subscription: String,
        /// The deadline, unix seconds.
        deadline: i64,
    },
    /// Re-creation of an instance a grace deadline tore down.
    Restore {
        /// The subscription.
        subscription: String,
        /// The deadline that tore it down, unix seconds.
        deadline: i64,
    },
    /// A token issued.
    Token(TokenKey),
    /// A live token revoked.
    Revoke(TokenKey),
    /// A live token's tier changed.
    Retier {
        /// The token.
        token: TokenKey,
        /// Its new tier.
        tier: String,
    },
    /// A live token's expiry pushed back.
    Renew {
        /// The token.
        token: TokenKey,
        /// The new expiry, unix seconds.
        until: i64,
    },
    /// A mail.
    Mail(MailKey),
    /// A fetch from Stripe.
    Fetch(FetchKey),
}

impl EffectKey {
    /// The subject the key names; `None` for a dunning mail (its key names the invoice; the intent
    /// carries the subscription).
    pub fn subject(&self) -> Option<Subject> {
        match self {
            Self::Instance { subscription, .. }
            | Self::Grace { subscription, .. }
            | Self::Restore { subscription, .. }
            | Self::Mail(MailKey::Welcome { subscription } | MailKey::Canceled { subscription }) => {
                Some(Subject::Subscription(subscription.clone()))
            }
            Self::Token(token)
            | Self::Revoke(token)
            | Self::Retier { token, .. }
            | Self::Renew { token, .. }
            | Self::Mail(MailKey::Token(token)) => Some(Subject::Customer(token.customer.clone())),
            Self::Mail(MailKey::PaymentFailed { .. }) | Self::Fetch(_) => None,
            Self::Mail(MailKey::Alert { failed, .. }) => failed.subject(),
        }
    }

    /// The admin alert of the `nth` failure of this key; `None` for an alert (alerts do not alert).
    pub fn alert(&self, nth: i64) -> Option<EffectKey> {
        match self {
            Self::Mail(MailKey::Alert { .. }) => None,
            failed => Some(Self::Mail(MailKey::Alert { failed: Box::new(failed.clone()), nth: nth.max(1) })),
        }
    }

    /// The mail carrying the token of this key, when it is a token key.
    pub fn token_mail(&self) -> Option<EffectKey> {
        match self {
            Self::Token(token) => Some(Self::Mail(MailKey::Token(token.clone()))),
            _ => None,
        }
    }
}

/// Escapes the four characters keys use as separators (and the escape itself).
fn escape(id: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
    for c in id.chars() {
        match c {
            '%' => out.write_str("%25")?,
            ':' => out.write_str("%3A")?,
            '/' => out.write_str("%2F")?,
            '#' => out.write_str("%23")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

fn unescape(text: &str) -> Result<String, KeyError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['%', ':', '/', '#']) {
        out.push_str(&rest[..at]);
        let decoded = match rest.get(at..at + 3) {
            Some("%25") => '%',
            Some("%3A") => ':',
            Some("%2F") => '/',
            Some("%23") => '#',
            _ => return Err(KeyError(format!("`{text}` is not an escaped id"))),
        };
        out.push(decoded);
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Id<'a>(&'a str);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(self.0, f)
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token:{}:{}", Id(&self.customer), self.position)?;
        match self.reissue {
            Some(n) => write!(f, "/{n}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for MailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Welcome { subscription } => write!(f, "email:welcome:{}", Id(subscription)),
            Self::Canceled { subscription } => write!(f, "email:canceled:{}", Id(subscription)),
            Self::PaymentFailed { invoice } => write!(f, "email:payment_failed:{}", Id(invoice)),
            Self::Token(token) => write!(f, "email:{token}"),
            Self::Alert { failed, nth: 1 } => write!(f, "email:alert:{failed}"),
            Self::Alert { failed, nth } => write!(f, "email:alert:{failed}#{nth}"),
        }
    }
}

impl fmt::Display for EffectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Instance { subscription, position } => write!(f, "instance:{}:{position}", Id(subscription)),
            Self::Grace { subscription, deadline } => write!(f, "grace:{}:{deadline}", Id(subscription)),
            Self::Restore { subscription, deadline } => write!(f, "restore:{}:{deadline}", Id(subscription)),
            Self::Token(token) => write!(f, "{token}"),
            Self::Revoke(token) => write!(f, "revoke:{token}"),
            Self::Retier { token, tier } => write!(f, "retier:{token}:{}", Id(tier)),
            Self::Renew { token, until } => write!(f, "renew:{token}:{until}"),
            Self::Mail(mail) => write!(f, "{mail}"),
            Self::Fetch(fetch) => write!(f, "fetch:{}:{}", fetch.name(), Id(&fetch.id)),
        }
    }
}

/// A key that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

fn number(text: &str, key: &str) -> Result<i64, KeyError> {
    // Only canonical numbers: `+5` or `05` would print back differently.
    let n: i64 = text.parse().map_err(|_| KeyError(format!("`{key}`: `{text}` is not a number")))?;
    if n.to_string() == text { Ok(n) } else { Err(KeyError(format!("`{key}`: `{text}` is not canonical"))) }
}

/// `<id>:<number>`.
fn id_and_number(text: &str, key: &str) -> Result<(String, i64), KeyError> {
    let (id, n) = text.split_once(':').ok_or_else(|| KeyError(format!("`{key}` lacks its number")))?;
    Ok((unescape(id)?, number(n, key)?))
}

/// `token:<cus>:<position>[/<n>]`, all of `text`.
fn token(text: &str, key: &str) -> Result<TokenKey, KeyError> {
    let rest = text.strip_prefix("token:").ok_or_else(|| KeyError(format!("`{key}` does not name a token")))?;
    let (customer, numbers) = rest.split_once(':').ok_or_else(|| KeyError(format!("`{key}` lacks a position")))?;
    let (position, reissue) = match numbers.split_once('/') {
        Some((position, n)) => (number(position, key)?, Some(number(n, key)?)),
        None => (number(numbers, key)?, None),
    };
    Ok(TokenKey { customer: unescape(customer)?, position, reissue })
}

/// `token:<cus>:<position>[/<n>]:<last>`: the token and what follows it.
fn token_then<'a>(text: &'a str, key: &str) -> Result<(TokenKey, &'a str), KeyError> {
    let (token_text, last) = text.rsplit_once(':').ok_or_else(|| KeyError(format!("`{key}` is cut short")))?;
    Ok((token(token_text, key)?, last))
}

impl FromStr for MailKey {
    type Err = KeyError;

    /// Parses everything after `email:`.
    fn from_str(rest: &str) -> Result<Self, KeyError> {
        if let Some(alert) = rest.strip_prefix("alert:") {
            let (failed, nth) = match alert.rsplit_once('#') {
                Some((failed, nth)) if nth != "1" => (failed, number(nth, rest)?),
                Some(_) => return Err(KeyError(format!("`{rest}`: a first alert has no #1"))),
                None => (alert, 1),
            };
            let failed: EffectKey = failed.parse()?;
            return match failed {
                EffectKey::Mail(MailKey::Alert { .. }) => Err(KeyError(format!("`{rest}`: alerts do not alert"))),
                failed => Ok(Self::Alert { failed: Box::new(failed), nth }),
            };
        }
        if rest.starts_with("token:") {
            return Ok(Self::Token(token(rest, rest)?));
        }
        let (template, id) = rest.split_once(':').ok_or_else(|| KeyError(format!("`email:{rest}` has no subject")))?;
        let id = unescape(id)?;
        match template {
            "welcome" => Ok(Self::Welcome { subscription: id }),
            "canceled" => Ok(Self::Canceled { subscription: id }),
            "payment_failed" => Ok(Self::PaymentFailed { invoice: id }),
            other => Err(KeyError(format!("`email:{rest}`: no mail template `{other}`"))),
        }
    }
}

impl FromStr for EffectKey {
    type Err = KeyError;

    fn from_str(key: &str) -> Result<Self, KeyError> {
        let (head, rest) = key.split_once(':').ok_or_else(|| KeyError(format!("`{key}` is not an effect key")))?;
        Ok(match head {
            "instance" => {
                let (subscription, position) = id_and_number(rest, key)?;
                Self::Instance { subscription, position }
            }
            "grace" => {
                let (subscription, deadline) = id_and_number(rest, key)?;
                Self::Grace { subscription, deadline }
            }
            "restore" => {
                let (subscription, deadline) = id_and_number(rest, key)?;
                Self::Restore { subscription, deadline }
            }
            "token" => Self::Token(token(key, key)?),
            "revoke" => Self::Revoke(token(rest, key)?),
            "retier" => {
                let (token, tier) = token_then(rest, key)?;
                Self::Retier { token, tier: unescape(tier)? }
            }
            "renew" => {
                let (token, until) = token_then(rest, key)?;
                Self::Renew { token, until: number(until, key)? }
            }
            "email" => Self::Mail(rest.parse()?),
            "fetch" => {
                let (part, id) = rest.split_once(':').ok_or_else(|| KeyError(format!("`{key}` names no object")))?;
                let id = unescape(id)?;
                let Some((part, _)) = FETCH_PARTS.iter().find(|(_, name)| *name == part) else {
                    return Err(KeyError(format!("`{key}`: nothing to fetch called `{part}`")));
                };
                Self::Fetch(FetchKey::new(*part, id))
            }
            other => return Err(KeyError(format!("`{key}`: no effect `{other}`"))),
        })
    }
}

impl serde::Serialize for EffectKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id() -> impl Strategy<Value = String> {
        // Stripe's alphabet, and the separators and escapes that must survive.
        "[A-Za-z0-9_%:/#-]{0,12}"
    }

    fn token_key() -> impl Strategy<Value = TokenKey> {
        (id(), any::<i64>(), proptest::option::of(any::<i64>())).prop_map(|(customer, position, reissue)| TokenKey {
            customer,
            position,
            reissue,
        })
    }

    fn plain_key() -> impl Strategy<Value = EffectKey> {
        prop_oneof![
            (id(), any::<i64>()).prop_map(|(subscription, position)| EffectKey::Instance { subscription, position }),
            (id(), any::<i64>()).prop_map(|(subscription, deadline)| EffectKey::Grace { subscription, deadline }),
            (id(), any::<i64>()).prop_map(|(subscription, deadline)| EffectKey::Restore { subscription, deadline }),
            token_key().prop_map(EffectKey::Token),
            token_key().prop_map(EffectKey::Revoke),
            (token_key(), id()).prop_map(|(token, tier)| EffectKey::Retier { token, tier }),
            (token_key(), any::<i64>()).prop_map(|(token, until)| EffectKey::Renew { token, until }),
            id().prop_map(|subscription| EffectKey::Mail(MailKey::Welcome { subscription })),
            id().prop_map(|subscription| EffectKey::Mail(MailKey::Canceled { subscription })),
            id().prop_map(|invoice| EffectKey::Mail(MailKey::PaymentFailed { invoice })),
            token_key().prop_map(|t| EffectKey::Mail(MailKey::Token(t))),
        ]
    }

    fn fetch_key() -> impl Strategy<Value = EffectKey> {
        prop_oneof![
            (0..FETCH_PARTS.len(), id()).prop_map(|(i, id)| EffectKey::Fetch(FetchKey::new(FETCH_PARTS[i].0, id))),
        ]
    }

    fn key() -> impl Strategy<Value = EffectKey> {
        prop_oneof![
            3 => plain_key(),
            1 => fetch_key(),
            1 => fetch_key().prop_map(|failed| failed.alert(1).expect("not an alert")),
            1 => (plain_key(), 1..1000_i64).prop_map(|(failed, nth)| failed.alert(nth).expect("not an alert")),
        ]
    }

    proptest! {
        #[test]
        fn every_key_prints_and_parses_back_to_itself(key in key()) {
            let text = key.to_string();
            prop_assert_eq!(text.parse::<EffectKey>(), Ok(key.clone()), "{}", text);
        }

        #[test]
        fn no_text_makes_the_parser_panic_and_what_it_accepts_prints_back_unchanged(text in "\\PC{0,40}") {
            if let Ok(key) = text.parse::<EffectKey>() {
                prop_assert_eq!(key.to_string(), text);
            }
        }
    }

    #[test]
    fn keys_of_stripe_ids_read_as_they_always_have() {
        let token = TokenKey { customer: "cus_1".into(), position: 7, reissue: None };
        let cases = [
            (EffectKey::Instance { subscription: "sub_1".into(), position: 7 }, "instance:sub_1:7"),
            (EffectKey::Grace { subscription: "sub_1".into(), deadline: 1000 }, "grace:sub_1:1000"),
            (EffectKey::Restore { subscription: "sub_1".into(), deadline: 1000 }, "restore:sub_1:1000"),
            (EffectKey::Token(TokenKey { reissue: Some(2), ..token.clone() }), "token:cus_1:7/2"),
            (EffectKey::Revoke(token.clone()), "revoke:token:cus_1:7"),
            (EffectKey::Retier { token: token.clone(), tier: "premium".into() }, "retier:token:cus_1:7:premium"),
            (EffectKey::Renew { token: token.clone(), until: 99 }, "renew:token:cus_1:7:99"),
            (EffectKey::Mail(MailKey::Welcome { subscription: "sub_1".into() }), "email:welcome:sub_1"),
            (EffectKey::Mail(MailKey::PaymentFailed { invoice: "in_1".into() }), "email:payment_failed:in_1"),
            (EffectKey::Mail(MailKey::Token(token.clone())), "email:token:cus_1:7"),
            (EffectKey::Fetch(FetchKey::new(Part::CheckoutLineItems, "cs_1")), "fetch:checkout_items:cs_1"),
            (EffectKey::Fetch(FetchKey::new(Part::InvoiceLines, "in_1")), "fetch:invoice_lines:in_1"),
            (EffectKey::Fetch(FetchKey::new(Part::SubscriptionPeriod, "evt_1")), "fetch:subscription_period:evt_1"),
            (EffectKey::Fetch(FetchKey::new(Part::ThinObject, "evt_1")), "fetch:thin_object:evt_1"),
        ];
        for (key, text) in cases {
            assert_eq!(key.to_string(), text);
            assert_eq!(text.parse::<EffectKey>(), Ok(key));
        }
        let failed = EffectKey::Instance { subscription: "sub_1".into(), position: 7 };
        assert_eq!(failed.alert(1).expect("alert").to_string(), "email:alert:instance:sub_1:7");
        assert_eq!(failed.alert(2).expect("alert").to_string(), "email:alert:instance:sub_1:7#2");
        assert_eq!(failed.alert(1).and_then(|a| a.alert(1)), None, "alerts do not alert");
    }

    #[test]
    fn an_id_with_separators_cannot_forge_another_key() {
        let tricky = EffectKey::Instance { subscription: "sub_1:9".into(), position: 3 };
        assert_eq!(tricky.to_string(), "instance:sub_1%3A9:3");
        assert_eq!(tricky.subject(), Some(Subject::Subscription("sub_1:9".into())));
        assert!("instance:sub_1:9:3".parse::<EffectKey>().is_err());
        assert!("email:nope:sub_1".parse::<EffectKey>().is_err());
        assert!("email:alert:email:alert:instance:sub_1:7".parse::<EffectKey>().is_err());
    }

    #[test]
    fn subjects_are_the_subscription_or_the_customer_the_key_names() {
        let token = TokenKey { customer: "cus_1".into(), position: 7, reissue: None };
        let mail = EffectKey::Token(token.clone()).token_mail().expect("a token key");
        assert_eq!(mail.subject(), Some(Subject::Customer("cus_1".into())));
        assert_eq!(mail.alert(1).and_then(|a| a.subject()), Some(Subject::Customer("cus_1".into())));
        assert_eq!(EffectKey::Mail(MailKey::PaymentFailed { invoice: "in_1".into() }).subject(), None);
        assert_eq!(Subject::from_columns("customer", "cus_1".into()), Some(Subject::Customer("cus_1".into())));
        assert_eq!(IntentKind::parse("instance"), Some(IntentKind::Instance));
        assert_eq!(Outcome::parse(Outcome::Skipped.as_str()), Some(Outcome::Skipped));
        assert_eq!(EffectKind::parse("teleport"), None);
    }
}
