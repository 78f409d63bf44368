//! `tlsgatectl`: the operator's client of the control socket. Human tables by
//! default, the raw response with `--json`.
//!
//! Exit status: 0 done, 1 refused by the control plane (the message says why;
//! nothing changed), 2 usage or connection error.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tlsgate_api::{
    Body, CaptureSpec, CertInfo, DataplaneStats, EventView, Frame, Request, Response, TrustAs,
};

use crate::state::to_b64;

/// tlsgatectl: manage a tlsgate appliance through its control socket.
#[derive(Parser, Debug)]
#[command(name = "tlsgatectl", version, about)]
pub struct Cli {
    /// The control socket.
    #[arg(long, global = true, default_value = "/run/tlsgate/control.sock", env = "TLSGATE_SOCKET")]
    pub socket: PathBuf,
    /// Print the control plane's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Dataplane connected, configuration version, license, CA expiry, uptime.
    Status,
    /// The dataplane's counters per worker and port.
    Stats,
    /// Decryption coverage: the share of TLS flows decrypted, and why the others were not.
    Coverage {
        /// Since: a duration (30s, 10m, 2h, 1d) or an RFC 3339 time (default:
        /// since the dataplane started). The control plane samples every minute
        /// and keeps a day.
        #[arg(long)]
        since: Option<String>,
    },
    /// Licenses (strong-crypto unlocks the strong cipher profile).
    #[command(subcommand)]
    License(LicenseCmd),
    /// The trust store: CA certificates and pinned server certificates.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// The decryption CA.
    #[command(subcommand)]
    Ca(CaCmd),
    /// The decryption policy: candidate, commit, history.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Events (TLS aborts, decrypted, passed, blocked, ...).
    #[command(subcommand)]
    Events(EventsCmd),
    /// Packet captures of a host's flows (both legs, pcapng).
    #[command(subcommand)]
    Capture(CaptureCmd),
    /// Learned exclusions: servers passed undecrypted because the appliance's own
    /// handshake found they support no mode it offers (`undecryptable: pass`).
    #[command(subcommand)]
    Exclusions(ExclusionsCmd),
    /// Operator accounts of the web console (passwords kept as Argon2id hashes).
    #[command(subcommand)]
    User(UserCmd),
}

/// `user ...`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add an account; the password is read from standard input (12 characters
    /// at least; not echoed on a terminal).
    Add {
        /// `[a-z0-9_.-]`, 1-32.
        name: String,
    },
    /// Remove an account.
    Remove {
        /// Its name.
        name: String,
    },
    /// Set an account's password (read from standard input).
    Passwd {
        /// Its name.
        name: String,
    },
    /// The accounts.
    List,
}

/// A password from standard input: one line; on a terminal, asked for on
/// standard error with echo off.
fn read_password() -> Result<tlsgate_api::Secret, Failure> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("password: ");
        let saved = tcgetattr(&stdin).ok();
        if let Some(mut t) = saved.clone() {
            t.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &t);
        }
        saved
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(t) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &t);
        eprintln!();
    }
    read.map_err(|e| Failure::Error(format!("reading the password: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Failure::Error("no password on standard input".into()));
    }
    Ok(tlsgate_api::Secret(password))
}

/// `exclusions ...`
#[derive(Subcommand, Debug)]
pub enum ExclusionsCmd {
    /// The learned exclusions alive: server, port, SNI, time left, the failure.
    List,
    /// Remove learned exclusions (the servers are probed again on their next
    /// failure).
    Clear {
        /// Only this server address's.
        #[arg(long)]
        server: Option<std::net::IpAddr>,
    },
}

/// `license ...`
#[derive(Subcommand, Debug)]
pub enum LicenseCmd {
    /// Load a license file.
    Load {
        /// The file.
        file: PathBuf,
    },
    /// The licenses held.
    Show,
    /// Remove a license.
    Remove {
        /// Its serial.
        serial: String,
    },
}

/// `trust ...`
#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Add CA or server certificates from a file (PEM or DER, bundles), or pin the
    /// server certificate an abort event kept (`--from-event ID`).
    Add {
        /// The certificate file.
        file: Option<PathBuf>,
        /// Pin the server certificate of this abort event instead.
        #[arg(long, conflicts_with = "file")]
        from_event: Option<u64>,
        /// The entry's name.
        #[arg(long)]
        name: Option<String>,
        /// auto (CA certificates that are not self-signed as CAs, others pinned),
        /// ca, pinned.
        #[arg(long = "as", default_value = "auto")]
        kind: String,
        /// A pinned certificate holds for this server name or address only
        /// (repeatable). Default: the names in the certificate; with
        /// --from-event: the event's SNI, or its destination address.
        #[arg(long = "for", value_name = "NAME", conflicts_with = "from_event")]
        names: Vec<String>,
        /// Pin for any name: whoever holds the certificate's key can then pose as
        /// any server to the appliance. An explicit choice.
        #[arg(long, conflicts_with = "names")]
        any_name: bool,
    },
    /// The entries.
    List,
    /// One entry, with its certificate.
    Show {
        /// Name or SHA-256 fingerprint.
        name: String,
    },
    /// Remove an entry.
    Remove {
        /// Name or SHA-256 fingerprint.
        name: String,
    },
    /// Include Debian's CA bundle (on) or not (off).
    System {
        /// on or off.
        state: String,
    },
}

/// `ca ...`
#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Generate a new decryption CA (ECDSA P-256), replacing the current one.
    Generate {
        /// Its common name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Import a decryption CA (certificate and key files).
    Import {
        /// Certificate (PEM or DER). With --pkcs11 and no certificate, a new
        /// self-signed CA certificate is made with the token's key.
        cert: Option<PathBuf>,
        /// Key (PEM or DER; PKCS#8, PKCS#1, SEC1).
        key: Option<PathBuf>,
        /// The key is on a PKCS#11 token instead (it never leaves it), one that
        /// control.pkcs11_keys lists: pkcs11:token=LABEL;object=KEY.
        #[arg(long, conflicts_with = "key")]
        pkcs11: Option<String>,
        /// The new certificate's common name (with --pkcs11 and no certificate).
        #[arg(long)]
        name: Option<String>,
    },
    /// The CA certificate, for clients to install.
    Export {
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
        /// Write it here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `policy ...`
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// The running policy (or the candidate).
    Show {
        /// Show the candidate.
        #[arg(long)]
        candidate: bool,
    },
    /// Load a policy file as the candidate.
    Load {
        /// The policy (JSON).
        file: PathBuf,
    },
    /// Check a policy file without loading it.
    Check {
        /// The policy (JSON).
        file: PathBuf,
    },
    /// What a commit would change (of the candidate, or of a file).
    Diff {
        /// A policy file to compare with the running policy.
        file: Option<PathBuf>,
    },
    /// Rules of the candidate.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// The candidate becomes the running policy (next configuration version).
    Commit,
    /// Run the policy of an earlier version again (as a new version).
    Rollback {
        /// The version.
        version: u64,
    },
    /// Configuration versions: who, when, what.
    History,
    /// Why a flow would (not) be decrypted: the decision at SYN and after the
    /// ClientHello, the rule that decides, why each earlier rule does not match,
    /// learned exclusions and admission. Give a flow, or --pcap.
    Explain {
        /// The client's address.
        #[arg(long, required_unless_present = "pcap")]
        client: Option<std::net::IpAddr>,
        /// The server's address.
        #[arg(long, required_unless_present = "pcap")]
        server: Option<std::net::IpAddr>,
        /// The server's port.
        #[arg(long, default_value_t = 443)]
        port: u16,
        /// The SNI the client sends.
        #[arg(long)]
        sni: Option<String>,
        /// The client's JA4.
        #[arg(long)]
        ja4: Option<String>,
        /// Explain every TLS flow of this capture (pcap or pcapng; SNI and JA4
        /// read from its ClientHellos).
        #[arg(long, conflicts_with_all = ["client", "server", "sni", "ja4"])]
        pcap: Option<PathBuf>,
    },
}

/// `policy rule ...`
#[derive(Subcommand, Debug)]
pub enum RuleCmd {
    /// Insert a rule (at the top unless --above/--below).
    Add {
        /// Its name.
        name: String,
        /// decrypt, do-not-decrypt or block.
        #[arg(long)]
        action: String,
        /// Insert above this rule.
        #[arg(long)]
        above: Option<String>,
        /// Insert below this rule.
        #[arg(long, conflicts_with = "above")]
        below: Option<String>,
        /// Client addresses or objects (repeatable).
        #[arg(long)]
        source: Vec<String>,
        /// Server addresses or objects (repeatable).
        #[arg(long)]
        destination: Vec<String>,
        /// Server ports, e.g. 443 or 8000-8100 (repeatable).
        #[arg(long)]
        port: Vec<String>,
        /// SNI patterns: exact or *.suffix (repeatable).
        #[arg(long)]
        sni: Vec<String>,
        /// JA4 fingerprints of the client (repeatable); exempts from decryption
        /// only with --source, --destination or --sni.
        #[arg(long)]
        ja4: Vec<String>,
    },
    /// Remove a rule.
    Remove {
        /// Its name.
        name: String,
    },
}

/// `events ...`
#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Recent events.
    List {
        /// Since: a duration (30s, 10m, 2h, 1d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this kind: abort, decrypted, passed, not_decrypted, blocked, reset, timeout.
        #[arg(long)]
        kind: Option<String>,
        /// Only events with this address (client or server) or SNI.
        #[arg(long)]
        host: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Follow new events.
    Tail {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only this address or SNI.
        #[arg(long)]
        host: Option<String>,
    },
    /// One event, grouped like the seed's event panel.
    Show {
        /// The event id.
        id: u64,
    },
}

/// `capture ...`
#[derive(Subcommand, Debug)]
pub enum CaptureCmd {
    /// Capture a host's flows, both legs, handshake included, to a pcapng file.
    Start {
        /// The host (client or server address).
        #[arg(long)]
        host: std::net::IpAddr,
        /// Only flows with this port.
        #[arg(long)]
        port: Option<u16>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
        /// Also write both legs' TLS session keys (NSS key log) to NAME.keys, for
        /// Wireshark (`-o tls.keylog_file:NAME.keys`). Only where the dataplane's
        /// configuration file allows it (`[capture] allow_keylog = true`).
        #[arg(long)]
        keylog: bool,
        /// The pcapng file's name: created (never overwritten) by the dataplane in
        /// its capture directory (`[capture] dir`, default /var/log/tlsgate/captures).
        name: String,
    },
    /// Stop a capture (all when no id).
    Stop {
        /// The capture.
        id: Option<u32>,
    },
    /// Captures.
    List,
}

/// Why a command failed: refused (1) or could not ask (2).
#[derive(Debug)]
pub enum Failure {
    /// The control plane refused; the message says why.
    Refused(String),
    /// Usage, file or connection error.
    Error(String),
}

/// One request and its answer.
pub fn ask(socket: &Path, req: Request) -> Result<Response, Failure> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => " (root or the control socket's group only)",
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is tlsgate-control running?)"
            }
            _ => "",
        };
        Failure::Error(format!("connecting to {}: {e}{hint}", socket.display()))
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    tlsgate_api::write_frame(&mut conn, &Frame::request(1, req))
        .map_err(|e| Failure::Error(format!("{}: {e}", socket.display())))?;
    let frame = match tlsgate_api::FrameReader::new(conn).read_frame() {
        Ok(tlsgate_api::framing::Read::Frame(f)) => *f,
        Ok(tlsgate_api::framing::Read::Invalid { error, .. }) => {
            return Err(Failure::Error(error.to_string()))
        }
        Ok(tlsgate_api::framing::Read::Eof) => {
            return Err(Failure::Error(format!(
                "{}: the control plane closed the connection",
                socket.display()
            )))
        }
        Err(e) => return Err(Failure::Error(format!("{}: {e}", socket.display()))),
    };
    match frame.body {
        Body::Response(r) => Ok(r),
        Body::Request(_) => {
            Err(Failure::Error("the control plane sent a request instead of an answer".into()))
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Error(format!("{}: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Error(format!("{}: {e}", path.display())))
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match out {
        Some(p) => std::fs::write(p, bytes).map_err(|e| Failure::Error(format!("{}: {e}", p.display()))),
        None => std::io::stdout().write_all(bytes).map_err(|e| Failure::Error(e.to_string())),
    }
}

/// A duration (`30s`, `10m`, `2h`, `1d`) before now, or an RFC 3339 time, in ns.
pub fn since_ns(text: &str) -> Result<u64, Failure> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let unit = |c: char| match c {
        's' => Some(1u64),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    if let Some(last) = text.chars().last() {
        if let (Some(mult), Ok(n)) = (unit(last), text[..text.len() - 1].parse::<u64>()) {
            return Ok(now.saturating_sub(n * mult * 1_000_000_000));
        }
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos().max(0) as u64)
        .map_err(|_| {
            Failure::Error(format!("--since {text:?}: give a duration like 10m or an RFC 3339 time"))
        })
}

/// `policy explain --pcap FILE`: every TLS flow of the capture, explained.
fn explain_capture(socket: &Path, file: &Path, json: bool) -> Result<String, Failure> {
    let bytes = read(file)?;
    let flows =
        crate::hellos::hello_flows(&bytes).map_err(|e| Failure::Error(format!("{}: {e}", file.display())))?;
    if flows.is_empty() {
        return Ok(format!("{}: no TCP flow with a SYN or a ClientHello\n", file.display()));
    }
    let mut out = String::new();
    let mut all = Vec::new();
    for f in flows {
        let req = Request::PolicyExplain {
            client: f.client.0,
            server: f.server.0,
            port: f.server.1,
            sni: f.sni.clone(),
            ja4: f.ja4.clone(),
        };
        let resp = ask(socket, req)?;
        if json {
            all.push(serde_json::json!({
                "client": format!("{}:{}", f.client.0, f.client.1),
                "server": format!("{}:{}", f.server.0, f.server.1),
                "sni": f.sni, "ja4": f.ja4, "explanation": resp,
            }));
            continue;
        }
        out.push_str(&format!(
            "flow {} -> {}{}{}\n",
            std::net::SocketAddr::from(f.client),
            std::net::SocketAddr::from(f.server),
            f.sni.as_ref().map_or(String::new(), |s| format!(" sni {s}")),
            f.ja4.as_ref().map_or(" (no ClientHello in the capture)".into(), |j| format!(" ja4 {j}"))
        ));
        out.push_str(&match &resp {
            Response::Explained(e) => e.text(),
            Response::Error { message, .. } => format!("refused: {message}\n"),
            other => human(&Command::Status, other),
        });
        out.push('\n');
    }
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&all).unwrap_or_default()));
    }
    Ok(out)
}

/// `coverage` as a table: the decrypted share, then each reason with flows.
fn coverage_text(c: &tlsgate_api::coverage::CoverageReport) -> String {
    let pct = |n: u64| {
        if c.tls_flows == 0 {
            String::from("-")
        } else {
            format!("{:.1} %", 100.0 * n as f64 / c.tls_flows as f64)
        }
    };
    let mut out = format!(
        "TLS flows {} .. {}: {}\n{:<22}{:>10}  {:>7}\n",
        rfc3339(c.since as i64),
        rfc3339(c.until as i64),
        c.tls_flows,
        "decrypted",
        c.decrypted,
        pct(c.decrypted)
    );
    out.push_str("not decrypted, by reason:\n");
    for r in &c.reasons {
        out.push_str(&format!("  {:<20}{:>10}  {:>7}  {}\n", r.reason, r.flows, pct(r.flows), r.text));
    }
    out.push_str(&format!("midstream segments (not flows, outside the share): {}\n", c.midstream_segments));
    out.push_str(&format!(
        "QUIC datagrams blocked or passed (not flows, outside the share; blocked clients retry over TCP): {}\n",
        c.quic_datagrams
    ));
    if let Some(n) = &c.note {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Runs a command; returns the text to print.
pub fn run(cli: &Cli) -> Result<String, Failure> {
    let socket = cli.socket.as_path();
    if let Command::Policy(PolicyCmd::Explain { pcap: Some(file), .. }) = &cli.command {
        return explain_capture(socket, file, cli.json);
    }
    let req = request(&cli.command)?;
    if let Command::Events(EventsCmd::Tail { kind, host }) = &cli.command {
        return tail(socket, kind.clone(), host.clone(), cli.json);
    }
    let resp = ask(socket, req)?;
    if let Response::Error { code, message } = &resp {
        return Err(Failure::Refused(if cli.json {
            serde_json::to_string(&resp).unwrap_or_default()
        } else {
            format!(
                "refused ({}): {message}",
                serde_json::to_value(code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        }));
    }
    if cli.json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&resp).unwrap_or_default()));
    }
    if let (Command::Ca(CaCmd::Export { der, out }), Response::Ca { cert: Some(c), .. }) =
        (&cli.command, &resp)
    {
        let bytes = if *der {
            crate::state::b64(c).map_err(|e| Failure::Error(e.to_string()))?
        } else {
            c.clone().into_bytes()
        };
        write_out(out.as_deref(), &bytes)?;
        return Ok(out.as_ref().map_or(String::new(), |p| format!("written to {}\n", p.display())));
    }
    Ok(human(&cli.command, &resp))
}

fn request(cmd: &Command) -> Result<Request, Failure> {
    Ok(match cmd {
        Command::Status => Request::Status,
        Command::Stats => Request::Stats,
        Command::Coverage { since } => Request::Coverage {
            since: since.as_deref().map(since_ns).transpose()?.map(|ns| ns / 1_000_000_000),
        },
        Command::License(l) => match l {
            LicenseCmd::Load { file } => Request::LicenseLoad { text: read_text(file)? },
            LicenseCmd::Show => Request::LicenseShow,
            LicenseCmd::Remove { serial } => Request::LicenseRemove { serial: serial.clone() },
        },
        Command::Trust(t) => match t {
            TrustCmd::Add { file: Some(f), from_event: None, name, kind, names, any_name } => {
                Request::TrustAdd {
                    names: names.clone(),
                    any_name: *any_name,
                    data: to_b64(&read(f)?),
                    name: name.clone(),
                    kind: match kind.as_str() {
                        "auto" => TrustAs::Auto,
                        "ca" => TrustAs::Ca,
                        "pinned" => TrustAs::Pinned,
                        other => return Err(Failure::Error(format!("--as {other:?}: auto, ca or pinned"))),
                    },
                }
            }
            TrustCmd::Add { file: None, from_event: Some(id), name, any_name, .. } => {
                Request::TrustAddFromEvent { event_id: *id, name: name.clone(), any_name: *any_name }
            }
            TrustCmd::Add { .. } => {
                return Err(Failure::Error("trust add: give a FILE or --from-event ID".into()))
            }
            TrustCmd::List => Request::TrustList,
            TrustCmd::Show { name } => Request::TrustShow { name: name.clone() },
            TrustCmd::Remove { name } => Request::TrustRemove { name: name.clone() },
            TrustCmd::System { state } => Request::TrustSystem {
                enabled: match state.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(Failure::Error(format!("trust system {other:?}: on or off"))),
                },
            },
        },
        Command::Ca(c) => match c {
            CaCmd::Generate { name } => Request::CaGenerate { common_name: name.clone() },
            CaCmd::Import { cert, key, pkcs11: Some(uri), name } => {
                let _ = key;
                Request::CaImportPkcs11 {
                    uri: uri.clone(),
                    cert: cert.as_deref().map(read).transpose()?.map(|c| to_b64(&c)),
                    common_name: name.clone(),
                }
            }
            CaCmd::Import { cert: Some(cert), key: Some(key), pkcs11: None, .. } => {
                Request::CaImport { cert: to_b64(&read(cert)?), key: to_b64(&read(key)?) }
            }
            CaCmd::Import { .. } => {
                return Err(Failure::Error("ca import: give CERT KEY, or --pkcs11 URI [CERT]".into()))
            }
            CaCmd::Export { der, .. } => Request::CaExport { der: *der },
        },
        Command::Policy(p) => match p {
            PolicyCmd::Explain { client, server, port, sni, ja4, .. } => Request::PolicyExplain {
                client: client.ok_or_else(|| Failure::Error("--client is needed (or --pcap)".into()))?,
                server: server.ok_or_else(|| Failure::Error("--server is needed (or --pcap)".into()))?,
                port: *port,
                sni: sni.clone(),
                ja4: ja4.clone(),
            },
            PolicyCmd::Show { candidate } => Request::PolicyShow { candidate: *candidate },
            PolicyCmd::Load { file } => Request::PolicyLoad { text: read_text(file)? },
            PolicyCmd::Check { file } => Request::PolicyCheck { text: read_text(file)? },
            PolicyCmd::Diff { file } => {
                Request::PolicyDiff { text: file.as_deref().map(read_text).transpose()? }
            }
            PolicyCmd::Rule(RuleCmd::Add {
                name,
                action,
                above,
                below,
                source,
                destination,
                port,
                sni,
                ja4,
            }) => {
                let mut rule = serde_json::json!({ "name": name, "action": action });
                for (key, list) in
                    [("source", source), ("destination", destination), ("sni", sni), ("ja4", ja4)]
                {
                    if !list.is_empty() {
                        rule[key] = serde_json::json!(list);
                    }
                }
                if !port.is_empty() {
                    let ports: Vec<Value> = port
                        .iter()
                        .map(|p| p.parse::<u64>().map_or_else(|_| Value::from(p.clone()), Value::from))
                        .collect();
                    rule["ports"] = Value::from(ports);
                }
                Request::PolicyRuleAdd { rule, above: above.clone(), below: below.clone() }
            }
            PolicyCmd::Rule(RuleCmd::Remove { name }) => Request::PolicyRuleRemove { name: name.clone() },
            PolicyCmd::Commit => Request::PolicyCommit,
            PolicyCmd::Rollback { version } => Request::PolicyRollback { version: *version },
            PolicyCmd::History => Request::PolicyHistory,
        },
        Command::Events(e) => match e {
            EventsCmd::List { since, kind, host, limit } => Request::EventsList {
                since_ns: since.as_deref().map(since_ns).transpose()?,
                after_id: None,
                kind: kind.clone(),
                host: host.clone(),
                limit: Some(*limit),
            },
            EventsCmd::Tail { kind, host } => Request::EventsList {
                since_ns: None,
                after_id: None,
                kind: kind.clone(),
                host: host.clone(),
                limit: Some(10),
            },
            EventsCmd::Show { id } => Request::EventsShow { id: *id },
        },
        Command::Capture(c) => match c {
            CaptureCmd::Start { host, port, count, keylog, name } => Request::CaptureStart(CaptureSpec {
                host: *host,
                port: *port,
                count: *count,
                file: name.clone(),
                keylog: *keylog,
            }),
            CaptureCmd::Stop { id } => Request::CaptureStop { id: *id },
            CaptureCmd::List => Request::CaptureList,
        },
        Command::User(u) => match u {
            UserCmd::Add { name } => Request::UserAdd { name: name.clone(), password: read_password()? },
            UserCmd::Remove { name } => Request::UserRemove { name: name.clone() },
            UserCmd::Passwd { name } => {
                Request::UserPasswd { name: name.clone(), password: read_password()? }
            }
            UserCmd::List => Request::UserList,
        },
        Command::Exclusions(c) => match c {
            ExclusionsCmd::List => Request::ExclusionsList,
            ExclusionsCmd::Clear { server } => Request::ExclusionsClear { server: *server },
        },
    })
}

fn tail(socket: &Path, kind: Option<String>, host: Option<String>, json: bool) -> Result<String, Failure> {
    let mut last: Option<u64> = None;
    loop {
        let req = Request::EventsList {
            since_ns: None,
            after_id: last,
            kind: kind.clone(),
            host: host.clone(),
            limit: Some(if last.is_none() { 10 } else { 1000 }),
        };
        match ask(socket, req)? {
            Response::Events { events } => {
                let mut out = std::io::stdout();
                for e in &events {
                    let line = if json {
                        format!("{}\n", serde_json::to_string(e).unwrap_or_default())
                    } else {
                        event_line(e)
                    };
                    let _ = out.write_all(line.as_bytes());
                    last = Some(e.event_id);
                }
                let _ = out.flush();
                if last.is_none() {
                    last = Some(0);
                }
            }
            Response::Error { message, .. } => return Err(Failure::Refused(message)),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn time_of(e: &EventView) -> String {
    tlsgate_api::log::stamp(e.time_ns)
}

fn event_line(e: &EventView) -> String {
    format!(
        "{:<20} {} {:<13} {}:{} -> {}:{} {:<24} {}\n",
        e.event_id,
        time_of(e),
        e.kind,
        e.src_ip,
        e.src_port,
        e.dst_ip,
        e.dst_port,
        if e.sni.is_empty() { "-" } else { e.sni.as_str() },
        e.error_detail
    )
}

fn cert_rows(entries: &[CertInfo]) -> String {
    let mut out = format!(
        "{:<28} {:<7} {:<44} {:<20} {:<16} {}\n",
        "name", "kind", "subject", "expires", "sha256", "for"
    );
    for c in entries {
        out.push_str(&format!(
            "{:<28} {:<7} {:<44} {:<20} {:<16} {}\n",
            c.name,
            c.kind,
            c.subject,
            rfc3339(c.not_after),
            &c.fingerprint[..c.fingerprint.len().min(16)],
            pin_scope(c)
        ));
    }
    out
}

/// Which names a trust entry holds for.
fn pin_scope(c: &CertInfo) -> String {
    match (c.kind.as_str(), c.names.is_empty()) {
        ("pinned", true) => "any name".into(),
        ("pinned", false) => c.names.join(", "),
        _ => "chains".into(),
    }
}

/// The seed's event panel, in groups.
pub fn event_panel(e: &EventView) -> String {
    let dash = |v: &str| if v.is_empty() { "-".to_string() } else { v.to_string() };
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), str::to_string);
    let alert = |a: &Option<tlsgate_api::AlertView>| {
        a.as_ref().map_or_else(
            || "-".to_string(),
            |a| format!("0x{:x} {}", 0x200 | u32::from(a.code), a.name.as_deref().unwrap_or("")),
        )
    };
    let (up, down) = (e.bytes_up, e.bytes_down);
    let kind = e.kind.as_str();
    let title = match kind {
        "abort" => {
            "TLS Abort: a TLS flow was aborted due to a handshake failure or certificate validation error"
        }
        "decrypted" => "TLS flow decrypted",
        "passed" => "TLS flow passed undecrypted",
        "not_decrypted" => "TLS flow not decrypted (policy)",
        "blocked" => "Flow blocked by the decryption policy",
        "reset" => "Intercepted flow reset",
        "timeout" => "Intercepted flow timed out",
        _ => "Event",
    };
    let iface = |p: u8| if p == 0 { "inside" } else { "outside" };
    let mut out = format!("Event {} ({}) at {}\n{title}\n", e.event_id, kind, time_of(e));
    let mut group = |name: &str, rows: Vec<(&str, String)>| {
        out.push_str(&format!("\n{name}\n"));
        for (k, v) in rows {
            // Values come from clients and servers (an ALPN, a subject): no
            // control character reaches the operator's terminal.
            let v: String = v.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
            out.push_str(&format!("  {k:<26} {v}\n"));
        }
    };
    group(
        "Source",
        vec![
            ("IP address", dash(&e.src_ip)),
            ("Port", e.src_port.to_string()),
            ("Interface", iface(e.inside_port).into()),
        ],
    );
    group(
        "Destination",
        vec![
            ("IP address", dash(&e.dst_ip)),
            ("Port", e.dst_port.to_string()),
            ("Interface", iface(e.outside_port).into()),
            ("Service", format!("tcp/{}", e.dst_port)),
            ("Host", dash(&e.sni)),
        ],
    );
    group(
        "Transaction",
        vec![
            ("Connection ID", e.connection_id.to_string()),
            ("Session", dash(&e.session_id)),
            ("Component name", "TLS Proxy".into()),
            ("Bytes sent", up.to_string()),
            ("Bytes received", down.to_string()),
            ("Total bytes", (up + down).to_string()),
            ("Configuration version", e.config_version.to_string()),
            ("Rule", dash(&e.rule)),
        ],
    );
    group(
        "TLS",
        vec![
            ("Encrypted flow", "Yes".into()),
            ("Decrypted flow", if kind == "decrypted" { "Yes" } else { "No" }.into()),
            ("Requested domain", dash(&e.sni)),
            ("Server certificate name", dash(&e.server_cert_subject)),
            ("Server certificate issuer", dash(&e.server_cert_issuer)),
            ("TLS version", opt(&e.tls_version)),
            ("Server cipher suite", opt(&e.cipher_suite)),
            ("Client fingerprint (JA4)", opt(&e.ja4)),
            ("ALPN client / server", format!("{} / {}", opt(&e.alpn_client), opt(&e.alpn_server))),
            ("Key exchange client / server", format!("{} / {}", opt(&e.group_client), opt(&e.group_server))),
            ("ECH offered", if e.ech_offered { "Yes (terminated with the outer SNI)" } else { "No" }.into()),
        ],
    );
    group(
        "Application",
        vec![("Name", "Transport Layer Security Protocol".into()), ("Type", "IP Protocol".into())],
    );
    group(
        "Device",
        vec![("Name", "tlsgate".into()), ("Type", format!("tlsgate-dataplane, worker {}", e.worker))],
    );
    let verify = if e.verify_code != 0 {
        format!("{} (code {}, depth {})", e.verify_text, e.verify_code, e.verify_depth)
    } else {
        "-".into()
    };
    group(
        "Error details",
        vec![
            ("Leg", dash(&e.leg)),
            ("Phase", dash(&e.phase)),
            ("Cause", opt(&e.cause)),
            ("Alert sent", alert(&e.alert_sent)),
            ("Alert received", alert(&e.alert_received)),
            ("Certificate verification", verify),
            ("Error", dash(&e.error_detail)),
            ("Server chain kept", opt(&e.chain_sha256)),
        ],
    );
    if kind == "abort" && e.chain_sha256.is_some() {
        out.push_str(&format!(
            "\nTo trust this server's certificate: tlsgatectl trust add --from-event {}\n",
            e.event_id
        ));
    }
    out
}

fn human(cmd: &Command, resp: &Response) -> String {
    match resp {
        Response::Done { message, version } => match version {
            Some(v) => format!("{message}\nconfiguration version {v}\n"),
            None => format!("{message}\n"),
        },
        Response::Pong { process, version } => format!("{process} {version}\n"),
        Response::Coverage(c) => coverage_text(c),
        Response::Users { users } if users.is_empty() => "no operator accounts (tlsgatectl user add NAME)\n".into(),
        Response::Users { users } => users
            .iter()
            .map(|(name, changed)| format!("{name:<32} password set {}\n", rfc3339(*changed as i64)))
            .collect(),
        Response::Explained(e) => e.text(),
        Response::Status(s) => {
            let mut out = format!(
                "control plane   up {:.0} s, configuration version {}, device {}\n",
                s.uptime_s, s.config_version, s.device_id
            );
            out.push_str(&match s.dataplane_pid {
                Some(pid) => format!("dataplane       connected (pid {pid}), running version {}\n", s.dataplane_version),
                None => "dataplane       not connected\n".into(),
            });
            out.push_str(&format!("cipher profile  {}\n", s.profile));
            if s.licenses.is_empty() {
                out.push_str("licenses        none (base cipher profile only)\n");
            }
            for l in &s.licenses {
                out.push_str(&format!("license         {} [{}] {} until {}\n", l.serial, l.features.join(","), l.state, l.not_after));
            }
            out.push_str(&match &s.ca {
                Some(ca) => format!("decryption CA   {} (expires {})\n", ca.subject, rfc3339(ca.not_after)),
                None => "decryption CA   none (tlsgatectl ca generate)\n".into(),
            });
            out.push_str(&format!("events          {} logged, {} lost\n", s.events_logged, s.events_lost));
            for c in &s.crls {
                let what = match (&c.state[..], &c.error) {
                    ("cached", _) => format!(
                        "cached, {} revoked, {} bytes, next update {}",
                        c.revoked,
                        c.bytes,
                        c.next_update.map_or("none".into(), |t| t.to_string())
                    ),
                    (state, Some(e)) => format!("{state}: {e}"),
                    (state, None) => state.to_string(),
                };
                out.push_str(&format!("crl             {} {what}\n", c.url));
            }
            out
        }
        Response::Licenses { device_id, profile, licenses } => {
            let mut out = format!("device {device_id}, cipher profile {profile}\n");
            out.push_str(&format!("{:<16} {:<20} {:<22} {:<22} {}\n", "serial", "features", "not before", "not after", "state"));
            for l in licenses {
                out.push_str(&format!("{:<16} {:<20} {:<22} {:<22} {}\n", l.serial, l.features.join(","), l.not_before, l.not_after, l.state));
            }
            out
        }
        Response::Trust { system_bundle, system_cas, entries } => match cmd {
            Command::Trust(TrustCmd::Show { .. }) => entries
                .iter()
                .map(|c| {
                    format!(
                        "name        {}\nkind        {}\nfor         {}\nsubject     {}\nissuer      {}\nnot before  {}\nnot after   {}\nsha256      {}\n{}",
                        c.name, c.kind, pin_scope(c), c.subject, c.issuer, rfc3339(c.not_before), rfc3339(c.not_after), c.fingerprint,
                        c.pem.clone().unwrap_or_default()
                    )
                })
                .collect(),
            _ => format!(
                "system CA bundle: {}\n{}",
                if *system_bundle { format!("on ({system_cas} CAs)") } else { "off".into() },
                cert_rows(entries)
            ),
        },
        Response::Ca { info, .. } => format!(
            "decryption CA {}\nsha256 {}\nvalid {} .. {}\n",
            info.subject,
            info.fingerprint,
            rfc3339(info.not_before),
            rfc3339(info.not_after)
        ),
        Response::Policy { version, text, candidate_differs } => format!(
            "{text}\n# running since configuration version {version}{}\n",
            if *candidate_differs { "; the candidate has uncommitted edits (policy diff)" } else { "" }
        ),
        Response::Diff { lines, warnings } => {
            let mut out = String::new();
            for w in warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
            if lines.is_empty() {
                out.push_str(if matches!(cmd, Command::Policy(PolicyCmd::Check { .. })) {
                    "valid; no change from the running policy\n"
                } else {
                    "no changes\n"
                });
            } else {
                if matches!(cmd, Command::Policy(PolicyCmd::Check { .. })) {
                    out.push_str("valid; changes from the running policy:\n");
                }
                for l in lines {
                    out.push_str(&format!("{l}\n"));
                }
            }
            out
        }
        Response::History { entries } => {
            let mut out = format!("{:>7}  {:<20}  {:>5}  {}\n", "version", "time", "uid", "what");
            for h in entries {
                let who = h.operator.as_ref().map_or(String::new(), |o| format!("[console: {o}] "));
                out.push_str(&format!(
                    "{:>7}  {:<20}  {:>5}  {who}{}\n",
                    h.version,
                    rfc3339(h.time as i64),
                    h.uid,
                    h.what
                ));
            }
            out
        }
        Response::Events { events } => match cmd {
            Command::Events(EventsCmd::Show { .. }) => events.iter().map(event_panel).collect(),
            _ => {
                if events.is_empty() {
                    return "no events\n".into();
                }
                events.iter().map(event_line).collect()
            }
        },
        Response::Captures { captures, used_bytes, max_total_bytes } => {
            let mut out = format!(
                "{:>3}  {:<16} {:<6} {:>8} {:>8} {:>10} {:<18} {}\n",
                "id", "host", "port", "packets", "dropped", "bytes", "state", "file"
            );
            for c in captures {
                let state = match (&c.ended, c.active) {
                    (_, true) => "running".to_string(),
                    (Some(why), false) => format!("done ({why})"),
                    (None, false) => "done".to_string(),
                };
                out.push_str(&format!(
                    "{:>3}  {:<16} {:<6} {:>8} {:>8} {:>10} {:<18} {}\n",
                    c.id,
                    c.spec.host,
                    c.spec.port.map_or("any".into(), |p| p.to_string()),
                    c.packets,
                    c.dropped,
                    c.bytes,
                    state,
                    c.spec.file
                ));
            }
            if *max_total_bytes > 0 {
                out.push_str(&format!(
                    "capture directory: {used_bytes} of {max_total_bytes} bytes used\n"
                ));
            }
            out
        }
        Response::Exclusions { exclusions, cleared } => {
            let mut out = cleared.map_or(String::new(), |n| format!("{n} learned exclusion(s) cleared\n"));
            if exclusions.is_empty() {
                out.push_str("no learned exclusions\n");
                return out;
            }
            out.push_str(&format!(
                "{:<40} {:<6} {:<32} {:>9}  {}\n",
                "server", "port", "sni", "expires", "failure"
            ));
            for e in exclusions {
                out.push_str(&format!(
                    "{:<40} {:<6} {:<32} {:>8}s  {} ({})\n",
                    e.server,
                    e.port,
                    e.sni.as_deref().unwrap_or("-"),
                    e.expires_in_s,
                    e.cause,
                    e.reason
                ));
            }
            out
        }
        Response::Stats(s) => stats_table(s),
        other => format!("{}\n", serde_json::to_string_pretty(other).unwrap_or_default()),
    }
}

/// The counters as tables for a person: ports, workers, drops by reason
/// (`tlsgatectl stats`).
pub fn stats_table(s: &DataplaneStats) -> String {
    let mut out = format!("driver {}  uptime {:.0} s  workers {}\n", s.driver, s.uptime_s, s.workers.len());
    out.push_str(&format!(
        "{:<8} {:<16} {:>5} {:>14} {:>14} {:>10} {:>10} {:>10}\n",
        "port", "device", "link", "rx pkts", "tx pkts", "imissed", "nombuf", "errors"
    ));
    for p in &s.ports {
        out.push_str(&format!(
            "{:<8} {:<16} {:>5} {:>14} {:>14} {:>10} {:>10} {:>10}\n",
            p.role,
            p.device.chars().take(16).collect::<String>(),
            if p.link_up { "up" } else { "down" },
            p.ipackets,
            p.opackets,
            p.imissed,
            p.rx_nombuf,
            p.ierrors + p.oerrors
        ));
    }
    out.push_str(&format!(
        "{:<7} {:>12} {:>12} {:>12} {:>12} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}\n",
        "worker",
        "rx inside",
        "rx outside",
        "tx inside",
        "tx outside",
        "flows",
        "created",
        "untracked",
        "spliced",
        "decrypted",
        "aborted",
        "handover"
    ));
    for w in &s.workers {
        let g = |k: &str| w.get(k);
        out.push_str(&format!(
            "{:<7} {:>12} {:>12} {:>12} {:>12} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}\n",
            w.worker,
            w.get("rx_packets_inside"),
            w.get("rx_packets_outside"),
            w.get("tx_packets_inside"),
            w.get("tx_packets_outside"),
            w.get("flows_active"),
            w.get("flows_created"),
            w.get("untracked_midstream") + w.get("untracked_table_full") + w.get("untracked_fragments"),
            g("active"),
            g("tls_decrypted"),
            g("tls_aborted"),
            w.get("handover_out")
        ));
    }
    let drops = s.total_drops();
    if drops.is_empty() {
        out.push_str("drops: none\n");
    } else {
        out.push_str("drops:\n");
        for (reason, n) in drops {
            out.push_str(&format!("  {reason:<28} {n}\n"));
        }
    }
    out
}

/// The whole program: exit status 0, 1 (refused) or 2 (error).
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(Failure::Refused(m)) => {
            eprintln!("tlsgatectl: {m}");
            1
        }
        Err(Failure::Error(m)) => {
            eprintln!("tlsgatectl: {m}");
            2
        }
    }
}
