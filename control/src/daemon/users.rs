//! Operator accounts of the web console: `tlsgatectl user add|remove|passwd|list`
//! (root or the socket's group, like every change) and the console's login
//! check. Passwords are kept only as Argon2id hashes (PHC strings, in the
//! 0600 state file); a login that fails counts against its account: after
//! [`LOGIN_FAILURES`] failures within a minute the account refuses logins for
//! [`LOGIN_LOCK`], with one refusal text whatever was wrong.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::*;
use crate::audit::Outcome;
use crate::state::UserRecord;
use tlsgate_api::Secret;

/// Failed logins per account within a minute before it is locked.
pub const LOGIN_FAILURES: u32 = 5;
/// How long a locked account refuses logins.
pub const LOGIN_LOCK: Duration = Duration::from_secs(60);
/// Accounts at most.
pub const MAX_USERS: usize = 64;

fn check_name(name: &str) -> std::result::Result<(), No> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("user name {name:?}: 1-32 characters of [a-z0-9_.-]")))
    }
}

fn hash(password: &str) -> std::result::Result<String, No> {
    let chars = password.chars().count();
    if !(12..=256).contains(&chars) {
        return Err(invalid("a password has 12 to 256 characters"));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| No(ErrorCode::Internal, format!("hashing the password: {e}")))
}

/// Failed logins within a minute: per account and client address, and per
/// account from everywhere (when the first of the current minute came, how many).
#[derive(Default)]
pub(super) struct Failures {
    by_source: std::collections::HashMap<(String, Option<std::net::IpAddr>), (Instant, u32)>,
    by_account: std::collections::HashMap<String, (Instant, u32)>,
}

/// Failed logins per account within a minute, from all addresses together,
/// before it is locked for everyone (a guess spread over many addresses).
pub const ACCOUNT_FAILURES: u32 = 50;
/// Entries kept in each failure table; a full table forgets its oldest.
const FAILURE_ENTRIES: usize = 4096;

/// Counts one attempt under `key`: whether it was already at `limit`. A full
/// table forgets its oldest entry that is under its limit (a lock is never
/// forgotten early).
fn count<K: std::hash::Hash + Eq + Clone>(
    t: &mut std::collections::HashMap<K, (Instant, u32)>,
    key: &K,
    limit: u32,
) -> bool {
    if t.len() >= FAILURE_ENTRIES && !t.contains_key(key) {
        t.retain(|_, (since, _)| since.elapsed() < LOGIN_LOCK);
        if t.len() >= FAILURE_ENTRIES {
            let oldest = t.iter().filter(|(_, (_, n))| *n < limit).min_by_key(|(_, (since, _))| *since);
            match oldest.map(|(k, _)| k.clone()) {
                Some(k) => {
                    t.remove(&k);
                }
                None => return true, // every entry locked: refuse until they expire
            }
        }
    }
    let e = t.entry(key.clone()).or_insert((Instant::now(), 0));
    if e.0.elapsed() >= LOGIN_LOCK {
        *e = (Instant::now(), 0);
    }
    if e.1 >= limit {
        return true;
    }
    e.1 += 1;
    false
}

/// The source a login counts under: IPv4 as is, IPv6 by its /64 (as the console counts).
fn source(from: Option<std::net::IpAddr>) -> Option<std::net::IpAddr> {
    from.map(|ip| match ip {
        std::net::IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let s = v.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    })
}

/// A session of the web console: its account and when it was opened.
pub(super) struct ConsoleSession {
    pub(super) user: String,
    /// The account's password hash when the session was opened: a new
    /// password (or a removed and re-added account) ends the session.
    pub(super) hash: String,
    pub(super) opened: Instant,
}

/// A console session ends this long after its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Console sessions at most (a full table ends its oldest).
const MAX_SESSIONS: usize = 1024;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn user_request(&self, req: Request, uid: u32) -> Response {
        match req {
            Request::UserAdd { name, password } => {
                let r = self.change(uid, |st, _| {
                    check_name(&name)?;
                    if st.users.iter().any(|u| u.name == name) {
                        return Err(invalid(format!("user {name} exists (tlsgatectl user passwd {name})")));
                    }
                    if st.users.len() >= MAX_USERS {
                        return Err(invalid(format!("{MAX_USERS} accounts at most")));
                    }
                    st.users.push(UserRecord {
                        name: name.clone(),
                        hash: hash(&password.0)?,
                        changed: now_s(),
                    });
                    Ok(Change { message: format!("user {name} added"), versioned: false })
                });
                self.audit_user(uid, "user_add", &name, &r);
                r
            }
            Request::UserRemove { name } => {
                let r = self.change(uid, |st, _| {
                    let before = st.users.len();
                    st.users.retain(|u| u.name != name);
                    if st.users.len() == before {
                        return Err(not_found(format!("no user {name}")));
                    }
                    Ok(Change { message: format!("user {name} removed"), versioned: false })
                });
                self.audit_user(uid, "user_remove", &name, &r);
                self.end_sessions(&name);
                r
            }
            Request::UserPasswd { name, password } => {
                let r = self.change(uid, |st, _| {
                    let hashed = hash(&password.0)?;
                    let u = st
                        .users
                        .iter_mut()
                        .find(|u| u.name == name)
                        .ok_or_else(|| not_found(format!("no user {name}")))?;
                    u.hash = hashed;
                    u.changed = now_s();
                    Ok(Change { message: format!("password of {name} set"), versioned: false })
                });
                self.audit_user(uid, "user_passwd", &name, &r);
                if matches!(r, Response::Done { .. }) {
                    self.end_sessions(&name);
                }
                r
            }
            Request::UserList => Response::Users {
                users: self.state().users.iter().map(|u| (u.name.clone(), u.changed)).collect(),
            },
            Request::UserLogin { name, password, from } => self.login(uid, &name, &password.0, from),
            Request::UserLogout { session } => {
                let gone = self.console_sessions().remove(&session.0);
                if let Some(s) = gone {
                    self.audit.record(uid, -1, "logout", Outcome::Allowed, &s.user);
                }
                Response::Done { message: "logged out".into(), version: None }
            }
            other => unsupported(other),
        }
    }

    fn audit_user(&self, uid: u32, action: &str, name: &str, r: &Response) {
        let (outcome, detail) = match r {
            Response::Error { message, .. } => (Outcome::Refused, format!("{name}: {message}")),
            _ => (Outcome::Allowed, name.to_string()),
        };
        self.audit.record(uid, -1, action, outcome, &detail);
    }

    /// The console's login check. The attempt is counted before the password
    /// is checked (and forgiven on success), so parallel guesses cannot get past
    /// the lock. Failures lock the account for the address they came from
    /// ([`LOGIN_FAILURES`] a minute), and for everyone only past
    /// [`ACCOUNT_FAILURES`] a minute: a stranger guessing cannot lock the
    /// operator out. The console's user gets a session ([`Response::LoggedIn`]).
    fn login(&self, uid: u32, name: &str, password: &str, from: Option<std::net::IpAddr>) -> Response {
        let refused = || {
            Response::error(ErrorCode::PermissionDenied, "login refused: wrong name or password, or locked")
        };
        let place = from.map_or(String::new(), |a| format!(" from {a}"));
        if check_name(name).is_err() {
            self.audit.record(uid, -1, "login", Outcome::Refused, &format!("a malformed user name{place}"));
            return refused();
        }
        let hash = self.state().users.iter().find(|u| u.name == name).map(|u| u.hash.clone());
        // Unknown names share one entry (they cannot push real accounts' out).
        let account = if hash.is_some() { name.to_string() } else { String::from("<unknown>") };
        let key = (account.clone(), source(from));
        {
            let mut f = self.login_failures.lock().unwrap_or_else(PoisonError::into_inner);
            // The account-wide lock stops only sources that failed themselves:
            // an operator at an address without failures still gets in.
            let prior = f
                .by_source
                .get(&key)
                .map_or(0, |(since, n)| if since.elapsed() < LOGIN_LOCK { *n } else { 0 });
            let source_locked = count(&mut f.by_source, &key, LOGIN_FAILURES);
            let account_over = count(&mut f.by_account, &account, ACCOUNT_FAILURES);
            let locked = source_locked || (account_over && prior > 0);
            if locked {
                drop(f);
                self.audit.record(uid, -1, "login", Outcome::Refused, &format!("{name}{place}: locked"));
                return refused();
            }
        }
        // An unknown name costs a hash verification too (no timing oracle).
        let dummy = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q6mTYpdxkC0wV8QoVmnEfXfzpoF4Cn3YnwgyXdc1S9g";
        let stored = hash.as_deref().unwrap_or(dummy);
        let ok = PasswordHash::new(stored)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            && hash.is_some();
        if !ok {
            self.audit.record(
                uid,
                -1,
                "login",
                Outcome::Refused,
                &format!("{name}{place}: wrong name or password"),
            );
            return refused();
        }
        {
            let mut f = self.login_failures.lock().unwrap_or_else(PoisonError::into_inner);
            f.by_source.remove(&key);
            if let Some(e) = f.by_account.get_mut(&account) {
                e.1 = e.1.saturating_sub(1);
            }
        }
        self.audit.record(uid, -1, "login", Outcome::Allowed, &format!("{name}{place}"));
        if Some(uid) != self.console_uid {
            return Response::Done { message: format!("welcome, {name}"), version: None };
        }
        let mut token = [0u8; 32];
        argon2::password_hash::rand_core::RngCore::fill_bytes(&mut OsRng, &mut token);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let verified = hash.unwrap_or_default();
        // Checked again under the state's lock: a password changed (or the
        // account removed) while this one was verified opens no session.
        let state = self.state();
        if !state.users.iter().any(|u| u.name == name && u.hash == verified) {
            return refused();
        }
        let mut sessions = self.console_sessions();
        drop(state);
        sessions.retain(|_, s| s.opened.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token.clone(),
            ConsoleSession { user: name.to_string(), hash: verified, opened: Instant::now() },
        );
        Response::LoggedIn { session: Secret(token) }
    }

    /// The console's sessions.
    pub(super) fn console_sessions(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<String, ConsoleSession>> {
        self.console_sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the console sessions of `name` (account removed, password changed).
    fn end_sessions(&self, name: &str) {
        self.console_sessions().retain(|_, s| s.user != name);
    }
}
