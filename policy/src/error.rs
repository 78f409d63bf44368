//! Errors: a [`ValidationError`] names the place (rule, object, group, settings), the
//! field and the problem; a [`PolicyError`] is anything an operation can refuse.

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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A name is empty.
    #[error("empty name")]
    EmptyName,
    /// A name is used twice (objects and groups share one namespace).
    #[error("duplicate name \"{0}\"")]
    DuplicateName(String),
    /// An object or group name that could be mistaken for an address, or is too long.
    #[error(
        "invalid name \"{0}\" (start with a letter or '_'; then letters, digits, '-', '_', '.'; at most 128)"
    )]
    InvalidName(String),
    /// A rule name that is too long or holds control characters.
    #[error("invalid rule name \"{0}\" (at most 128 characters, no control characters)")]
    InvalidRuleName(String),
    /// A reference to an object or group that does not exist.
    #[error("unknown object \"{0}\"")]
    UnknownObject(String),
    /// Groups that contain themselves; the path is listed.
    #[error("group cycle: {}", .0.join(" -> "))]
    GroupCycle(Vec<String>),
    /// Groups nested deeper than the limit.
    #[error("groups nested deeper than {0} levels")]
    NestingTooDeep(usize),
    /// An empty list where at least one entry is needed.
    #[error("empty list (omit the field to match anything)")]
    EmptyList,
    /// Not an IPv4 or IPv6 address.
    #[error("invalid address \"{0}\"")]
    InvalidAddress(String),
    /// A malformed CIDR or a prefix length beyond the family's width.
    #[error("invalid CIDR \"{0}\"")]
    InvalidCidr(String),
    /// A CIDR with bits set after the prefix.
    #[error("invalid CIDR \"{0}\": host bits set (did you mean \"{1}\"?)")]
    CidrHostBits(String, String),
    /// A malformed range, mixed families, or first address above the last.
    #[error("invalid range \"{0}\"")]
    InvalidRange(String),
    /// A port or port range outside 0..=65535, or first above last.
    #[error("invalid port \"{0}\"")]
    InvalidPort(String),
    /// An SNI pattern that is not a host name or `*.` followed by one.
    #[error("invalid SNI pattern \"{0}\"")]
    InvalidSni(String),
    /// A number outside its range.
    #[error("{0} is outside {1}..={2}")]
    OutOfRange(u64, u64, u64),
}

/// A policy that cannot be used, with the place, the field and the problem:
/// `rule "Decrypt-All": field "destination": unknown object "web-srv"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {}{problem}", field_label(.field))]
pub struct ValidationError {
    /// The rule, object, group or settings block.
    pub place: Place,
    /// The JSON field, when the problem is in one.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub problem: Problem,
}

fn field_label(field: &Option<&'static str>) -> String {
    field.map(|name| format!("field \"{name}\": ")).unwrap_or_default()
}

impl ValidationError {
    pub(crate) fn new(place: Place, field: Option<&'static str>, problem: Problem) -> ValidationError {
        ValidationError { place, field, problem }
    }
}

/// Everything an operation of this crate can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not JSON of the policy's shape (unknown fields included).
    #[error("policy JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The policy parsed but is not valid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
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
