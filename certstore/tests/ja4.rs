//! JA4 fingerprints: FoxIO's worked example, and a cross-check against an
//! independent implementation (ja4plus, installed by `scripts/install-deps.sh`)
//! over ClientHellos from rustls clients and hand-made ones (GREASE, odd ALPN
//! values, no extensions, TLS 1.2 only, split over records).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tlsgate_certstore::rustls::{self, ClientConfig, ClientConnection, RootCertStore};
use tlsgate_certstore::Ja4;

/// Where `scripts/install-deps.sh` puts ja4plus.
const JA4PLUS: &str = "/opt/tlsgate-test/python";

/// A ClientHello record: `version`, `ciphers`, then `extensions` (type, data).
fn hello(version: u16, ciphers: &[u16], extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend([7u8; 32]); // random
    body.extend([32]);
    body.extend([9u8; 32]); // session id
    body.extend(((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        body.extend(c.to_be_bytes());
    }
    body.extend([1, 0]); // null compression
    if let Some(exts) = extensions {
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend(kind.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
    }
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn u16_list(len_bytes: usize, v: &[u16]) -> Vec<u8> {
    let mut out = if len_bytes == 1 {
        vec![(v.len() * 2) as u8]
    } else {
        ((v.len() * 2) as u16).to_be_bytes().to_vec()
    };
    for x in v {
        out.extend(x.to_be_bytes());
    }
    out
}

fn sni(name: &str) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend((name.len() as u16).to_be_bytes());
    entry.extend(name.as_bytes());
    let mut out = (entry.len() as u16).to_be_bytes().to_vec();
    out.extend(entry);
    out
}

fn alpn(values: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for v in values {
        list.push(v.len() as u8);
        list.extend(*v);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend(list);
    out
}

/// FoxIO's worked example (the JA4 specification's README): its JA4_r lists, in
/// a shuffled wire order with GREASE values added, give its JA4.
fn foxio_example() -> Vec<u8> {
    let ciphers = [
        0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let sigs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
    let exts: Vec<(u16, Vec<u8>)> = vec![
        (0x1a1a, vec![]),
        (0x0000, sni("example.com")),
        (0x0017, vec![]),
        (0xff01, vec![0]),
        (0x000a, u16_list(2, &[0x2a2a, 0x001d, 0x0017])),
        (0x000b, vec![1, 0]),
        (0x0023, vec![]),
        (0x0010, alpn(&[b"h2", b"http/1.1"])),
        (0x0005, vec![1, 0, 0, 0, 0]),
        (0x000d, u16_list(2, &sigs)),
        (0x0012, vec![]),
        (0x0033, vec![0, 0]),
        (0x002d, vec![1, 1]),
        (0x002b, u16_list(1, &[0x3a3a, 0x0304, 0x0303])),
        (0x001b, vec![2, 0, 2]),
        (0x4469, vec![0, 3, 2, b'h', b'2']),
        (0x0015, vec![0; 10]),
        (0x4a4a, vec![0]),
    ];
    hello(0x0303, &ciphers, Some(&exts))
}

#[test]
fn foxio_worked_example() {
    let j = Ja4::from_records(&foxio_example()).expect("a ClientHello");
    assert_eq!(j.to_string(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(j.server_name(), Some("example.com"));
    assert_eq!(
        j.raw(),
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
         0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_\
         0403,0804,0401,0503,0805,0501,0806,0601"
    );
}

#[test]
fn malformed_hellos_have_no_fingerprint() {
    let good = foxio_example();
    for cut in [0, 5, 9, 40, good.len() / 2, good.len() - 1] {
        assert!(Ja4::from_records(&good[..cut]).is_none(), "cut at {cut}");
    }
    let mut not_hello = good.clone();
    not_hello[5] = 2; // a ServerHello
    assert!(Ja4::from_records(&not_hello).is_none());
    let mut odd = hello(0x0303, &[0x1301], Some(&[(0x000d, vec![0, 3, 4, 3, 8])]));
    assert!(Ja4::from_records(&odd).is_none(), "an odd-length list");
    odd = hello(0x0303, &[0x1301], Some(&[(0x0010, vec![0, 5, 9, b'h'])]));
    assert!(Ja4::from_records(&odd).is_none(), "an ALPN value past its list");
}

/// The hellos of rustls clients as this appliance's tests and users configure
/// them.
fn rustls_hellos() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, alpn, tls12_only) in [
        ("server.tg.test", vec![b"h2".to_vec(), b"http/1.1".to_vec()], false),
        ("server.tg.test", vec![], false),
        ("198.18.0.2", vec![b"http/1.1".to_vec()], false),
        ("server.tg.test", vec![b"h2".to_vec()], true),
    ] {
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12_only { &[&rustls::version::TLS12] } else { rustls::ALL_VERSIONS };
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        config.alpn_protocols = alpn;
        let server = rustls::pki_types::ServerName::try_from(name).unwrap().to_owned();
        let mut conn = ClientConnection::new(Arc::new(config), server).unwrap();
        let mut bytes = Vec::new();
        conn.write_tls(&mut bytes).unwrap();
        out.push(bytes);
    }
    out
}

/// Hand-made hellos for the rules' edges.
fn edge_hellos() -> Vec<Vec<u8>> {
    let sigs = u16_list(2, &[0x0403, 0x0a0a, 0x0804]);
    vec![
        foxio_example(),
        // No extensions at all, TLS 1.2.
        hello(0x0303, &[0xc02f, 0x009c], None),
        // An empty extension block, TLS 1.0, GREASE only among the ciphers.
        hello(0x0301, &[0x2a2a], Some(&[])),
        // ALPN whose ends are not printable: high bytes, a control byte.
        hello(0x0303, &[0x1301], Some(&[(0x0010, alpn(&[&[0xba, 0xad]])), (0x000d, sigs.clone())])),
        hello(0x0303, &[0x1301], Some(&[(0x0010, alpn(&[&[b'h', 0x1f]]))])),
        hello(0x0303, &[0x1301], Some(&[(0x0010, alpn(&[b"x"]))])),
        // Only SNI and ALPN: nothing left to hash in part c.
        hello(0x0303, &[0x1301], Some(&[(0x0000, sni("a.tg.test")), (0x0010, alpn(&[b"h2"]))])),
        // supported_versions with GREASE and an unknown version.
        hello(0x0303, &[0x1301], Some(&[(0x002b, u16_list(1, &[0x7a7a, 0x0305, 0x0304]))])),
        // More than 99 ciphers.
        hello(0x0303, &(0x0100..0x0200).collect::<Vec<u16>>(), Some(&[(0x000d, sigs)])),
    ]
}

/// ja4plus's JA4 of each hello (one hex-encoded hello per line).
fn ja4plus(hellos: &[Vec<u8>]) -> Vec<String> {
    assert!(
        std::path::Path::new(JA4PLUS).join("ja4plus").is_dir(),
        "ja4plus is not installed in {JA4PLUS}: run scripts/install-deps.sh (as root)"
    );
    let script = "import sys\n\
        from ja4plus.utils.tls_utils import parse_tls_handshake\n\
        from ja4plus.fingerprinters.ja4 import generate_ja4\n\
        for line in sys.stdin:\n\
        \x20   print(generate_ja4(parse_tls_handshake(bytes.fromhex(line.strip()))))\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .env("PYTHONPATH", JA4PLUS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = String::new();
    for h in hellos {
        input.push_str(&h.iter().map(|b| format!("{b:02x}")).collect::<String>());
        input.push('\n');
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ja4plus: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_same_fingerprints_as_an_independent_implementation() {
    let hellos: Vec<Vec<u8>> = rustls_hellos().into_iter().chain(edge_hellos()).collect();
    let theirs = ja4plus(&hellos);
    assert_eq!(theirs.len(), hellos.len());
    for (i, (h, t)) in hellos.iter().zip(&theirs).enumerate() {
        let ours = Ja4::from_records(h).map(|j| j.to_string()).unwrap_or_else(|| "None".into());
        assert_eq!(
            &ours,
            t,
            "hello {i}: ours {ours}, ja4plus {t}; JA4_r {:?}",
            Ja4::from_records(h).map(|j| j.raw())
        );
        eprintln!("hello {i}: {ours}");
    }
}

/// A hello split over two records (Chromium's post-quantum hello may be) has the
/// fingerprint of the hello.
#[test]
fn a_hello_split_over_records() {
    let whole = foxio_example();
    let hs = &whole[5..];
    let (first, second) = hs.split_at(100);
    let mut split = Vec::new();
    for part in [first, second] {
        split.extend([22, 3, 3]);
        split.extend((part.len() as u16).to_be_bytes());
        split.extend(part);
    }
    assert_eq!(Ja4::from_records(&split), Ja4::from_records(&whole));
}
