//! The decryption CA's key on a PKCS#11 token (an HSM; SoftHSM2 in the tests):
//! `tlsgatectl ca import --pkcs11 URI`. The key never leaves the token; the
//! signer hands it SHA-256 digests to sign (`CKM_ECDSA`, P-256) and turns the
//! token's raw `r‖s` into the DER signature X.509 wants.
//!
//! Root names the keys the control plane may use, in its own configuration
//! (`control.pkcs11_keys`): each one a full URI (RFC 7512, the parts used here)
//! with the library and the file that holds the PIN:
//!
//! ```text
//! pkcs11:token=tlsgate;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/tlsgate/hsm.pin
//!        └ token label  └ key label (private and public key objects)
//! ```
//!
//! An operator's request names one of them by token and object
//! (`pkcs11:token=tlsgate;object=ca`); it never names a library, a PIN or a file
//! for this process to open. The PIN file must be a regular file owned by root
//! (or this process's user), readable by its owner only, of at most 1 KiB; it is
//! opened without following a link and without blocking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use tlsgate_certstore::{RemoteKeyError, RemoteKeyPair, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256};

use crate::error::{Error, Result};

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `module-path` (required in `control.pkcs11_keys`; optional in a request,
    /// where it must then equal the configured one).
    pub module: Option<String>,
    /// `token`: the token's label.
    pub token: String,
    /// `object`: the key's label.
    pub object: String,
    /// `pin-value` or `pin-source` (only `pin-source`, in the configuration).
    pub pin: Option<PinSpec>,
    /// `serial`: the token's serial number, when given (a token is then found
    /// by label and serial: another token with the same label is not it).
    pub serial: Option<String>,
}

/// Where the PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSpec {
    /// `pin-value`.
    Value(String),
    /// `pin-source`: a file.
    Source(std::path::PathBuf),
}

/// The largest PIN file read.
pub const MAX_PIN_FILE: u64 = 1024;

impl PinSpec {
    /// The PIN. A `pin-source` file is opened without following a link and
    /// without blocking (a FIFO or a device never stalls this process); it must
    /// be a regular file owned by root or this process's user, readable by its
    /// owner only, of at most [`MAX_PIN_FILE`] bytes (read through a bound, not
    /// its reported size).
    pub fn read(&self) -> Result<String> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = match self {
            PinSpec::Value(v) => return Ok(v.clone()),
            PinSpec::Source(path) => path,
        };
        let refuse = || Error::PinSource(path.clone());
        trusted_path(path).map_err(|_| refuse())?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)
            .map_err(|_| refuse())?;
        let meta = file.metadata().map_err(|_| refuse())?;
        let owner_ok = meta.uid() == 0 || meta.uid() == nix::unistd::geteuid().as_raw();
        if !meta.is_file() || !owner_ok || meta.mode() & 0o077 != 0 {
            return Err(refuse());
        }
        let mut bytes = Vec::new();
        file.take(MAX_PIN_FILE + 1).read_to_end(&mut bytes).map_err(|_| refuse())?;
        if bytes.len() as u64 > MAX_PIN_FILE {
            return Err(refuse());
        }
        let text = String::from_utf8(bytes).map_err(|_| refuse())?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// Whether `path` and every directory above it are owned by root (or this
/// process's user) and writable by their owner only, as sshd's StrictModes asks:
/// nobody else can replace the file, or a directory on its way. Links are
/// followed as the kernel would and their targets checked.
pub fn trusted_path(path: &std::path::Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The real file and its directories, and the directories the given path
    // passes through (a link's own directory decides what the link is).
    let ancestors = real.ancestors().chain(path.parent().into_iter().flat_map(std::path::Path::ancestors));
    for p in ancestors.filter(|p| !p.as_os_str().is_empty()) {
        let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.uid() != 0 && m.uid() != euid {
            return Err(format!("{} is owned by uid {}, not root", p.display(), m.uid()));
        }
        // A sticky directory (/tmp) lets others add names, but not replace the
        // root-owned entry below it on this path.
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !sticky_dir {
            return Err(format!("{} is writable by others than its owner", p.display()));
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| Error::Pkcs11Uri(format!("bad escape in {s:?}")))?;
            out.push(
                u8::from_str_radix(hex, 16).map_err(|_| Error::Pkcs11Uri(format!("bad escape in {s:?}")))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Pkcs11Uri(format!("{s:?} is not UTF-8")))
}

impl Pkcs11Uri {
    /// Parses a URI; the error names what is missing or wrong.
    pub fn parse(uri: &str) -> Result<Pkcs11Uri> {
        let bad = |m: &str| Error::Pkcs11Uri(m.to_string());
        let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| bad("a PKCS#11 URI starts with \"pkcs11:\""))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut module, mut token, mut object, mut pin, mut serial) = (None, None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) =
                attr.split_once('=').ok_or_else(|| bad(&format!("{attr:?}: expected name=value")))?;
            let v = percent_decode(v)?;
            match k {
                "token" => token = Some(v),
                "object" => object = Some(v),
                "serial" => serial = Some(v),
                _ => {} // other path attributes (manufacturer, serial, type, id) narrow nothing here
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) =
                attr.split_once('=').ok_or_else(|| bad(&format!("{attr:?}: expected name=value")))?;
            let v = percent_decode(v)?;
            match k {
                "module-path" => module = Some(v),
                "pin-value" => pin = Some(PinSpec::Value(v)),
                "pin-source" => pin = Some(PinSpec::Source(v.strip_prefix("file:").unwrap_or(&v).into())),
                other => return Err(bad(&format!("unknown query attribute {other:?}"))),
            }
        }
        Ok(Pkcs11Uri {
            module,
            token: token.ok_or_else(|| bad("the URI names no token (its label)"))?,
            object: object.ok_or_else(|| bad("the URI names no object (the key's label)"))?,
            serial,
            pin,
        })
    }

    /// An entry of `control.pkcs11_keys`: an absolute `module-path` and a
    /// `pin-source` with an absolute path (a `pin-value` would be readable by
    /// whoever reads the configuration).
    pub fn configured(uri: &str) -> Result<Pkcs11Uri> {
        let u = Pkcs11Uri::parse(uri)?;
        match &u.module {
            Some(m) if std::path::Path::new(m).is_absolute() => {}
            _ => {
                return Err(Error::Pkcs11Uri(
                    "the URI names no absolute module-path (the PKCS#11 library)".into(),
                ))
            }
        }
        match &u.pin {
            Some(PinSpec::Source(p)) if p.is_absolute() => {}
            Some(PinSpec::Value(_)) => {
                return Err(Error::Pkcs11Uri(
                    "pin-value would be readable by whoever reads this file: use pin-source=FILE \
                     (owned by root, mode 0600 or 0400)"
                        .into(),
                ))
            }
            _ => return Err(Error::Pkcs11Uri("the URI gives no pin-source with an absolute path".into())),
        }
        Ok(u)
    }

    /// An operator's request: a token and an object, perhaps a `module-path`;
    /// never a PIN.
    pub fn requested(uri: &str) -> Result<Pkcs11Uri> {
        let u = Pkcs11Uri::parse(uri)?;
        if u.pin.is_some() {
            return Err(Error::Pkcs11Uri(
                "a request gives no PIN: root names the key and its pin-source in \
                 control.pkcs11_keys, and the request names the key (pkcs11:token=T;object=O)"
                    .into(),
            ));
        }
        Ok(u)
    }

    /// Whether the configured key `self` is the one `wanted` asks for.
    pub fn answers(&self, wanted: &Pkcs11Uri) -> bool {
        self.token == wanted.token
            && self.object == wanted.object
            && wanted.module.as_ref().is_none_or(|m| Some(m) == self.module.as_ref())
            && wanted.serial.as_ref().is_none_or(|s| Some(s) == self.serial.as_ref())
    }

    /// `token`/`object` as shown to operators.
    pub fn short(&self) -> String {
        format!("pkcs11:token={};object={}", self.token, self.object)
    }
}

/// A P-256 key on a token, signing through one logged-in session.
pub struct Pkcs11Key {
    // Field order: the session closes before the library is finalized.
    session: Mutex<Session>,
    key: ObjectHandle,
    public: Vec<u8>,
    _ctx: Pkcs11,
}

/// One library context per module (a module is initialized once per process),
/// and one open key per URI.
static CONTEXTS: OnceLock<Mutex<HashMap<String, Pkcs11>>> = OnceLock::new();
static KEYS: OnceLock<Mutex<HashMap<String, Arc<Pkcs11Key>>>> = OnceLock::new();

fn context(module: &str) -> Result<Pkcs11> {
    let mut all = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = all.get(module) {
        return Ok(c.clone());
    }
    // The library is checked again now (root's configuration named it; nobody
    // else may have replaced it or a directory on its way since), opened without
    // following a link, and what was checked is what is loaded.
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    let bad = |why: String| Error::Token(format!("PKCS#11 module {module}: {why}"));
    trusted_path(std::path::Path::new(module)).map_err(bad)?;
    let real = std::fs::canonicalize(module).map_err(|e| bad(e.to_string()))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| bad(e.to_string()))?;
    let m = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !m.is_file() || m.mode() & 0o022 != 0 {
        return Err(bad("not a regular file writable by its owner only".into()));
    }
    let ctx = Pkcs11::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(pkcs11(format!("module {module}")))?;
    drop(file);
    ctx.initialize(CInitializeArgs::OsThreads).map_err(pkcs11(format!("initialize {module}")))?;
    all.insert(module.to_string(), ctx.clone());
    Ok(ctx)
}

/// The entries of `control.pkcs11_keys` (set once by the daemon at start): a
/// key is opened only while root's configuration still names it, also one a
/// state file recorded earlier.
static CONFIGURED: OnceLock<Vec<String>> = OnceLock::new();

/// Records root's `control.pkcs11_keys` (first call wins).
pub fn set_configured(keys: &[String]) {
    let _ = CONFIGURED.set(keys.to_vec());
}

/// PIN files whose PIN a token refused, as they were then (device, inode,
/// modification time, size): such a PIN is not tried again until root changes
/// the file, so nothing an operator or a dataplane does can lock the token's PIN
/// by retrying it.
static PIN_REFUSED: OnceLock<Mutex<HashMap<String, FileIdentity>>> = OnceLock::new();

/// A file as it is now: device, inode, modification time (s, ns), size.
type FileIdentity = (u64, u64, i64, i64, u64);

fn file_identity(path: &std::path::Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The key a configured URI names, opened once and then shared (by library,
/// token and object: two spellings of one key share one session).
pub fn key_for(uri_text: &str) -> Result<SharedKey> {
    if !CONFIGURED.get().is_some_and(|keys| keys.iter().any(|k| k == uri_text)) {
        return Err(Error::Token(
            "this token key is no longer in control.pkcs11_keys (root's configuration names the keys in use)"
                .into(),
        ));
    }
    let uri = Pkcs11Uri::configured(uri_text)?;
    let id = format!("{:?}", (&uri.module, &uri.token, &uri.object));
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = keys.get(&id) {
        return Ok(SharedKey(k.clone()));
    }
    let key = Arc::new(Pkcs11Key::open(&uri)?);
    keys.insert(id, key.clone());
    Ok(SharedKey(key))
}

/// A shared handle on a token key, as rcgen signs with it.
pub struct SharedKey(Arc<Pkcs11Key>);

impl RemoteKeyPair for SharedKey {
    fn public_key(&self) -> &[u8] {
        self.0.public_key()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, RemoteKeyError> {
        self.0.sign(msg)
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl Pkcs11Key {
    /// Opens the token and finds the key; the error names what failed.
    pub fn open(uri: &Pkcs11Uri) -> Result<Pkcs11Key> {
        let module =
            uri.module.as_deref().ok_or_else(|| Error::Pkcs11Uri("the URI names no module-path".into()))?;
        let ctx = context(module)?;
        let slot = ctx
            .get_slots_with_token()
            .map_err(pkcs11("slots"))?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s).is_ok_and(|t| {
                    t.label().trim_end() == uri.token
                        && uri.serial.as_deref().is_none_or(|serial| t.serial_number().trim_end() == serial)
                })
            })
            .ok_or_else(|| match &uri.serial {
                Some(s) => Error::Token(format!("no token labelled {:?} with serial {s:?}", uri.token)),
                None => Error::Token(format!("no token labelled {:?}", uri.token)),
            })?;
        let session = ctx.open_ro_session(slot).map_err(pkcs11("session"))?;
        let spec = uri.pin.as_ref().ok_or_else(|| Error::Pkcs11Uri("the URI gives no pin-source".into()))?;
        let pin_file = match spec {
            PinSpec::Source(p) => p.clone(),
            PinSpec::Value(_) => std::path::PathBuf::new(),
        };
        let refused_key = format!("{:?}", (module, &uri.token, &pin_file));
        let refused = PIN_REFUSED.get_or_init(Default::default);
        if let Some(then) = refused.lock().unwrap_or_else(PoisonError::into_inner).get(&refused_key) {
            if file_identity(&pin_file).as_ref() == Some(then) {
                return Err(Error::Token(format!(
                    "token {:?} refused the PIN in {} before; it is not tried again until root changes that file \
                     (a token locks its PIN after a few failures)",
                    uri.token,
                    pin_file.display()
                )));
            }
        }
        let pin = spec.read()?;
        use cryptoki::error::{Error as Ck, RvError};
        match session.login(UserType::User, Some(&AuthPin::new(pin))) {
            // Login state is per token and process: another key of this token
            // logged it in already (with the PIN root configured).
            Ok(()) | Err(Ck::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                if let Ck::Pkcs11(
                    RvError::PinIncorrect
                    | RvError::PinLocked
                    | RvError::PinExpired
                    | RvError::PinInvalid
                    | RvError::PinLenRange,
                    _,
                ) = e
                {
                    if let Some(id) = file_identity(&pin_file) {
                        refused.lock().unwrap_or_else(PoisonError::into_inner).insert(refused_key, id);
                    }
                }
                return Err(pkcs11(format!("login to token {:?}", uri.token))(e));
            }
        }
        let label = Attribute::Label(uri.object.as_bytes().to_vec());
        let find = |class| {
            session
                .find_objects(&[Attribute::Class(class), label.clone()])
                .map_err(pkcs11(format!("find {:?}", uri.object)))
        };
        let key = *find(ObjectClass::PRIVATE_KEY)?.first().ok_or_else(|| {
            Error::Token(format!("no private key labelled {:?} on token {:?}", uri.object, uri.token))
        })?;
        let public_obj = *find(ObjectClass::PUBLIC_KEY)?.first().ok_or_else(|| {
            Error::Token(format!("no public key labelled {:?} on token {:?}", uri.object, uri.token))
        })?;
        let point = session
            .get_attributes(public_obj, &[AttributeType::EcPoint])
            .map_err(pkcs11("public key"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Token("the public key has no EC point (only P-256 keys are supported)".into())
            })?;
        // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
        let public = match point.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => rest.to_vec(),
            [0x04, ..] if point.len() == 65 => point.clone(),
            _ => {
                return Err(Error::Token(
                    "the key is not an uncompressed P-256 point (only P-256 keys are supported)".into(),
                ))
            }
        };
        Ok(Pkcs11Key { session: Mutex::new(session), key, public, _ctx: ctx })
    }
}

/// A failed PKCS#11 call, `what` naming it.
fn pkcs11(what: impl Into<String>) -> impl FnOnce(cryptoki::error::Error) -> Error {
    let what = what.into();
    move |source| Error::Pkcs11 { what, source }
}

/// `r‖s` (each 32 bytes) as the DER `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = (int(&raw[..32]), int(&raw[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    Some(out)
}

impl RemoteKeyPair for Pkcs11Key {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, RemoteKeyError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let raw = session.sign(&Mechanism::Ecdsa, self.key, digest.as_ref()).map_err(|e| {
            tracing::error!(error = %e, "PKCS#11 sign");
            RemoteKeyError::RemoteKeyError
        })?;
        ecdsa_raw_to_der(&raw).ok_or(RemoteKeyError::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_parsed_and_refusals_name_the_part() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=tls%20gate;object=ca;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/p",
        )
        .unwrap();
        assert_eq!(
            u,
            Pkcs11Uri {
                module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
                token: "tls gate".into(),
                object: "ca".into(),
                pin: Some(PinSpec::Source("/etc/p".into())),
                serial: None
            }
        );
        for (bad, needle) in [
            ("token=a", "pkcs11:"),
            ("pkcs11:object=ca?module-path=/m&pin-value=1", "no token"),
            ("pkcs11:token=t?module-path=/m&pin-value=1", "no object"),
            ("pkcs11:token=t;object=o?module-path=/m&pin-value=1&evil=1", "unknown"),
            ("pkcs11:token=t;object=%ZZ", "bad escape"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        // Root's configuration: an absolute library and a PIN file, never a
        // pin-value.
        for (bad, needle) in [
            ("pkcs11:token=t;object=o?pin-source=/p", "module-path"),
            ("pkcs11:token=t;object=o?module-path=lib.so&pin-source=/p", "absolute module-path"),
            ("pkcs11:token=t;object=o?module-path=/m", "pin-source"),
            ("pkcs11:token=t;object=o?module-path=/m&pin-source=p", "pin-source"),
            ("pkcs11:token=t;object=o?module-path=/m&pin-value=1", "pin-value"),
        ] {
            let e = Pkcs11Uri::configured(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        // An operator's request: never a PIN; it picks a configured key.
        let e = Pkcs11Uri::requested("pkcs11:token=t;object=o?pin-source=/root/x").unwrap_err().to_string();
        assert!(e.contains("control.pkcs11_keys"), "{e}");
        let want = Pkcs11Uri::requested("pkcs11:token=tls%20gate;object=ca").unwrap();
        assert!(u.answers(&want));
        let other_module =
            Pkcs11Uri::requested("pkcs11:token=tls%20gate;object=ca?module-path=/x.so").unwrap();
        assert!(!u.answers(&other_module));
        assert!(!u.answers(&Pkcs11Uri::requested("pkcs11:token=other;object=ca").unwrap()));
    }

    /// A PIN file is a small regular file owned by root (or this user), readable
    /// by its owner only; never a device, a FIFO, a link or a large file.
    #[test]
    fn pin_sources_are_small_private_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tg-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pin");
        std::fs::write(&f, "4321\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(PinSpec::Source(f.clone()).read().unwrap(), "4321");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let readable = dir.join("readable");
        std::fs::write(&readable, "4321").unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![b'1'; 2000]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        for bad in [
            std::path::PathBuf::from("/dev/zero"),
            "/proc/self/status".into(),
            link,
            fifo,
            readable,
            big,
            dir.join("missing"),
        ] {
            let e = PinSpec::Source(bad.clone()).read().unwrap_err().to_string();
            // One message for every refusal: no oracle on files the caller
            // cannot see.
            assert!(
                e.ends_with("not a regular file owned by root with mode 0600 or 0400 of at most 1024 bytes"),
                "{}: {e}",
                bad.display()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A library or PIN file is trusted only when nobody but root can replace it
    /// or a directory on its way (a sticky directory such as /tmp counts as safe
    /// above a root-owned entry); a missing file is refused.
    #[test]
    fn trusted_paths_are_root_owned_all_the_way_up() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("tg-trust-{}", std::process::id()));
        let open_dir = base.join("open");
        std::fs::create_dir_all(&open_dir).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = base.join("lib.so");
        std::fs::write(&ok, b"x").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(trusted_path(&ok), Ok(()));
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let planted = open_dir.join("lib.so");
        std::fs::write(&planted, b"x").unwrap();
        assert!(trusted_path(&planted).unwrap_err().contains("writable by others"));
        let link = base.join("link.so");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        assert!(trusted_path(&link).is_err(), "a link to a file in an open directory");
        assert!(trusted_path(&base.join("missing.so")).is_err());
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(trusted_path(&ok).is_err(), "a file others may write");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn raw_signatures_become_der() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 1; // s is small
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_raw_to_der(&raw[..63]).is_none());
    }
}
