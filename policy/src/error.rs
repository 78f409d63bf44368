//! The crate's one error type, [`Error`]: anything an operation can refuse. A policy
//! that is not valid is [`Error::Invalid`], whose [`ValidationError`] names the place
//! (rule, object, group, settings), the field and the [`Problem`].

use std::fmt;

/// Where in a policy a validation problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// The rule with this name: `rule "Decrypt-All"`.
    Rule(String),
    /// The rule at this 1-based position, when its name is empty or duplicated: `rule #3`.
    RuleAt(usize),
    /// The object with this name: `object "lan"`.
    Object(String),
    /// The object at this 1-based position: `object #2`.
    ObjectAt(usize),
    /// The group with this name: `group "internal"`.
    Group(String),
    /// The group at this 1-based position: `group #1`.
    GroupAt(usize),
    /// The decryption settings.
    Settings,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Rule(name) => write!(f, "rule \"{name}\""),
            Place::RuleAt(n) => write!(f, "rule #{n}"),
            Place::Object(name) => write!(f, "object \"{name}\""),
            Place::ObjectAt(n) => write!(f, "object #{n}"),
            Place::Group(name) => write!(f, "group \"{name}\""),
            Place::GroupAt(n) => write!(f, "group #{n}"),
            Place::Settings => f.write_str("settings"),
        }
    }
}

/// What is wrong at a [`Place`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A name is empty.
    EmptyName,
    /// A name is used twice (objects and groups share one namespace).
    DuplicateName(String),
    /// An object or group name that could be mistaken for an address, or is too long.
    InvalidName(String),
    /// A rule name that is too long or holds control characters.
    InvalidRuleName(String),
    /// A reference to an object or group that does not exist.
    UnknownObject(String),
    /// Groups that contain themselves; the path is listed.
    GroupCycle(Vec<String>),
    /// Groups nested deeper than the limit.
    NestingTooDeep(usize),
    /// An empty list where at least one entry is needed.
    EmptyList,
    /// Not an IPv4 or IPv6 address.
    InvalidAddress(String),
    /// A malformed CIDR or a prefix length beyond the family's width.
    InvalidCidr(String),
    /// A CIDR with bits set after the prefix.
    CidrHostBits(String, String),
    /// A malformed range, mixed families, or first address above the last.
    InvalidRange(String),
    /// A port or port range outside 0..=65535, or first above last.
    InvalidPort(String),
    /// An SNI pattern that is not a host name or `*.` followed by one.
    InvalidSni(String),
    /// A number outside its range.
    OutOfRange(u64, u64, u64),
    /// Not a JA4 fingerprint (`t13d1516h2_8daaf6152771_e5627efa2ab1`).
    InvalidJa4(String),
    /// A `do-not-decrypt` rule whose only client-side condition is a JA4: a
    /// fingerprint is what the client claims.
    Ja4AloneCannotExempt,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptyName => write!(f, "empty name"),
            Problem::DuplicateName(a) => write!(f, "duplicate name \"{a}\""),
            Problem::InvalidName(a) => write!(f, "invalid name \"{a}\" (start with a letter or '_'; then letters, digits, '-', '_', '.'; at most 128)"),
            Problem::InvalidRuleName(a) => write!(f, "invalid rule name \"{a}\" (at most 128 characters, no control characters)"),
            Problem::UnknownObject(a) => write!(f, "unknown object \"{a}\""),
            Problem::GroupCycle(a) => write!(f, "group cycle: {}", a.join(" -> ")),
            Problem::NestingTooDeep(a) => write!(f, "groups nested deeper than {a} levels"),
            Problem::EmptyList => write!(f, "empty list (omit the field to match anything)"),
            Problem::InvalidAddress(a) => write!(f, "invalid address \"{a}\""),
            Problem::InvalidCidr(a) => write!(f, "invalid CIDR \"{a}\""),
            Problem::CidrHostBits(a, b) => write!(f, "invalid CIDR \"{a}\": host bits set (did you mean \"{b}\"?)"),
            Problem::InvalidRange(a) => write!(f, "invalid range \"{a}\""),
            Problem::InvalidPort(a) => write!(f, "invalid port \"{a}\""),
            Problem::InvalidSni(a) => write!(f, "invalid SNI pattern \"{a}\""),
            Problem::OutOfRange(a, b, c) => write!(f, "{a} is outside {b}..={c}"),
            Problem::InvalidJa4(a) => write!(f, "invalid JA4 fingerprint \"{a}\" (expected like t13d1516h2_8daaf6152771_e5627efa2ab1)"),
            Problem::Ja4AloneCannotExempt => write!(
                f,
                "a ja4 condition may exempt from decryption only together with source, destination or sni \
                 (a fingerprint is what the client claims; an address of 0.0.0.0/0 or ::/0 narrows nothing)"
            ),
        }
    }
}

/// A policy that cannot be used, with the place, the field and the problem:
/// `rule "Decrypt-All": field "destination": unknown object "web-srv"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The rule, object, group or settings block.
    pub place: Place,
    /// The JSON field, when the problem is in one.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.place)?;
        if let Some(name) = self.field {
            write!(f, "field \"{name}\": ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl ValidationError {
    pub(crate) fn new(place: Place, field: Option<&'static str>, problem: Problem) -> ValidationError {
        ValidationError { place, field, problem }
    }
}

/// Everything an operation of this crate can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not JSON of the policy's shape (unknown fields included).
    #[error("policy JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The policy parsed but is not valid.
    #[error("{0}")]
    Invalid(ValidationError),
    /// An edit named a rule that does not exist.
    #[error("no rule named \"{0}\"")]
    UnknownRule(String),
    /// An edit would create a second rule with this name.
    #[error("a rule named \"{0}\" already exists")]
    DuplicateRule(String),
    /// A rule cannot be moved above or below itself.
    #[error("rule \"{0}\" cannot be placed relative to itself")]
    SelfAnchor(String),
    /// An edit named an object or group that does not exist.
    #[error("no object or group named \"{0}\"")]
    UnknownObject(String),
    /// A version that is not (or no longer) in the history.
    #[error("version {0} is not in the history")]
    UnknownVersion(u64),
    /// A store cannot be restored from an empty history.
    #[error("no committed version to restore")]
    EmptyHistory,
    /// A commit under a version not after the running one.
    #[error("version {version} is not after the running version {running}")]
    StaleVersion {
        /// The version asked for.
        version: u64,
        /// The running one.
        running: u64,
    },
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Error {
        Error::Invalid(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
