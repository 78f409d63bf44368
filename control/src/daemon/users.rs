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

/// Failed logins of one account: when the first of the current minute came, how many.
#[derive(Default)]
pub(super) struct Failures {
    by_user: std::collections::HashMap<String, (Instant, u32)>,
}

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
                r
            }
            Request::UserList => Response::Users {
                users: self.state().users.iter().map(|u| (u.name.clone(), u.changed)).collect(),
            },
            Request::UserLogin { name, password } => self.login(uid, &name, &password.0),
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
    /// the lock.
    fn login(&self, uid: u32, name: &str, password: &str) -> Response {
        let refused = || {
            Response::error(ErrorCode::PermissionDenied, "login refused: wrong name or password, or locked")
        };
        if check_name(name).is_err() {
            self.audit.record(uid, -1, "login", Outcome::Refused, "a malformed user name");
            return refused();
        }
        {
            let mut f = self.login_failures.lock().unwrap_or_else(PoisonError::into_inner);
            if f.by_user.len() >= 4096 {
                f.by_user.retain(|_, (since, _)| since.elapsed() < LOGIN_LOCK);
                if f.by_user.len() >= 4096 {
                    return refused(); // a flood of names: fail closed until it passes
                }
            }
            let e = f.by_user.entry(name.to_string()).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= LOGIN_LOCK {
                *e = (Instant::now(), 0);
            }
            if e.1 >= LOGIN_FAILURES {
                drop(f);
                self.audit.record(uid, -1, "login", Outcome::Refused, &format!("{name}: locked"));
                return refused();
            }
            e.1 += 1;
        }
        let hash = self.state().users.iter().find(|u| u.name == name).map(|u| u.hash.clone());
        // An unknown name costs a hash verification too (no timing oracle).
        let dummy = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q6mTYpdxkC0wV8QoVmnEfXfzpoF4Cn3YnwgyXdc1S9g";
        let stored = hash.as_deref().unwrap_or(dummy);
        let ok = PasswordHash::new(stored)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            && hash.is_some();
        if ok {
            self.login_failures.lock().unwrap_or_else(PoisonError::into_inner).by_user.remove(name);
            self.audit.record(uid, -1, "login", Outcome::Allowed, name);
            return Response::Done { message: format!("welcome, {name}"), version: None };
        }
        self.audit.record(uid, -1, "login", Outcome::Refused, &format!("{name}: wrong name or password"));
        refused()
    }
}
