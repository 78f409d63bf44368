//! Distinguished names: OpenSSL's legacy one-line form and a canonical form for
//! issuer/subject matching.
//!
//! The one-line form is what `X509_NAME_oneline` prints and what the seed's logs show
//! (`/unstructuredName=ciscoasa`, `/C=US/O=Org/CN=x`); `openssl x509 -noout -subject
//! -nameopt compat` prints the same. Rules reproduced from OpenSSL 3.0:
//! - each attribute is `/` + short name + `=` + value; an attribute in the same RDN
//!   (multi-valued RDN) as the previous one starts with `+` instead of `/`;
//! - the short name is OpenSSL's (`CN`, `O`, `emailAddress`, `unstructuredName`, ...),
//!   or the dotted OID when OpenSSL has no name for it;
//! - value bytes below 0x20, 0x7f and above 0x7e are written `\xHH` (upper-case hex);
//!   `/` and `+` are escaped with a backslash;
//! - a GeneralString whose length is a multiple of 4 and whose first three bytes of
//!   every group are zero is read as UCS-4 (only the fourth byte of each group is kept).

use x509_parser::x509::X509Name;

/// OpenSSL short names (`OBJ_nid2sn`) for the attribute types seen in certificates.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.16", "postalAddress"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.18", "postOfficeBox"),
    ("2.5.4.20", "telephoneNumber"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.45", "x500UniqueIdentifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.97", "organizationIdentifier"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("1.2.840.113549.1.9.2", "unstructuredName"),
    ("1.2.840.113549.1.9.8", "unstructuredAddress"),
    ("1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL"),
    ("1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST"),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"),
];

/// ASN.1 universal tag numbers of the string types found in names.
mod tag {
    pub const UTF8: u32 = 12;
    pub const PRINTABLE: u32 = 19;
    pub const T61: u32 = 20;
    pub const IA5: u32 = 22;
    pub const VISIBLE: u32 = 26;
    pub const GENERAL: u32 = 27;
    pub const UNIVERSAL: u32 = 28;
    pub const BMP: u32 = 30;
    pub const NUMERIC: u32 = 18;
}

/// OpenSSL's short name for a dotted OID, or the dotted OID itself.
pub(crate) fn short_name(dotted: &str) -> &str {
    SHORT_NAMES.iter().find(|(oid, _)| *oid == dotted).map(|(_, sn)| *sn).unwrap_or(dotted)
}

/// `name` in OpenSSL's legacy one-line form (`X509_NAME_oneline`), e.g. `/C=US/O=Org/CN=x`.
pub(crate) fn openssl_oneline(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for rdn in name.iter() {
        for (i, atv) in rdn.iter().enumerate() {
            out.push(if i == 0 { '/' } else { '+' });
            out.push_str(short_name(&atv.attr_type().to_id_string()));
            out.push('=');
            let value = atv.attr_value();
            let data = value.data;
            let ucs4_low = value.tag().0 == tag::GENERAL
                && data.chunks_exact(4).remainder().is_empty()
                && data.chunks(4).all(|c| c[0] == 0 && c[1] == 0 && c[2] == 0);
            for (j, &b) in data.iter().enumerate() {
                if ucs4_low && j % 4 != 3 {
                    continue;
                }
                if !(b' '..=b'~').contains(&b) {
                    out.push_str(&format!("\\x{b:02X}"));
                } else {
                    if b == b'/' || b == b'+' {
                        out.push('\\');
                    }
                    out.push(b as char);
                }
            }
        }
    }
    out
}

/// A canonical encoding of `name` for matching an issuer name against a subject name,
/// in the spirit of OpenSSL's `X509_NAME_cmp`: string values are decoded, trimmed, have
/// inner white space collapsed and ASCII letters lower-cased; other values compare as
/// raw bytes. Two names match when their canonical encodings are equal.
pub(crate) fn canonical(name: &X509Name<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.as_raw().len());
    for rdn in name.iter() {
        out.push(0xfe);
        for atv in rdn.iter() {
            out.push(0xfd);
            out.extend_from_slice(atv.attr_type().as_bytes());
            out.push(0xfc);
            let value = atv.attr_value();
            match decode_string(value.tag().0, value.data) {
                Some(s) => {
                    let mut last_space = true;
                    for ch in s.trim().chars() {
                        if ch.is_whitespace() {
                            if !last_space {
                                out.push(b' ');
                            }
                            last_space = true;
                        } else {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.to_ascii_lowercase().encode_utf8(&mut buf).as_bytes());
                            last_space = false;
                        }
                    }
                    // Trailing collapsed space (cannot happen after trim, kept for clarity).
                }
                None => {
                    out.push(0xff);
                    out.extend_from_slice(&(value.tag().0).to_be_bytes());
                    out.extend_from_slice(value.data);
                }
            }
        }
    }
    out
}

/// Decodes the ASN.1 string types used in names to a Rust string.
fn decode_string(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        tag::UTF8 | tag::PRINTABLE | tag::IA5 | tag::VISIBLE | tag::NUMERIC => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        // T61 is treated as Latin-1, as OpenSSL does.
        tag::T61 => Some(data.iter().map(|&b| b as char).collect()),
        tag::BMP => {
            let chunks = data.chunks_exact(2);
            if !chunks.remainder().is_empty() {
                return None;
            }
            let units: Vec<u16> = chunks.map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        tag::UNIVERSAL => {
            let chunks = data.chunks_exact(4);
            if !chunks.remainder().is_empty() {
                return None;
            }
            chunks
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
        }
        _ => None,
    }
}

/// The first common name of `name` as text, if it has one that decodes.
pub(crate) fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name().next().and_then(|cn| decode_string(cn.attr_value().tag().0, cn.attr_value().data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_fall_back_to_dotted_oid() {
        assert_eq!(short_name("2.5.4.3"), "CN");
        assert_eq!(short_name("1.2.840.113549.1.9.2"), "unstructuredName");
        assert_eq!(short_name("1.2.3.4"), "1.2.3.4");
    }

    #[test]
    fn decodes_string_types() {
        assert_eq!(decode_string(tag::BMP, &[0, b'a', 0, b'b']).as_deref(), Some("ab"));
        assert_eq!(decode_string(tag::UNIVERSAL, &[0, 0, 0, b'z']).as_deref(), Some("z"));
        assert_eq!(decode_string(tag::T61, &[0xe9]).as_deref(), Some("é"));
        assert_eq!(decode_string(4, b"x"), None);
    }
}
