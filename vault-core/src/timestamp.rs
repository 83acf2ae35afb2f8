//! RFC 3161 time-stamping of an exported audit head, just enough of it:
//! building a `TimeStampReq` and reading a `TimeStampResp`.
//!
//! The DER is written and read by hand (a few dozen lines) rather than with
//! an ASN.1 crate: the request is one fixed shape, and reading a response
//! needs only the status and the `TSTInfo` inside the CMS `SignedData`.
//!
//! What [`check_response`] verifies: the response's status is *granted*
//! (0) or *granted with modifications* (1); it carries a `SignedData` whose
//! encapsulated content is a `TSTInfo`; the `TSTInfo`'s message imprint is
//! SHA-256 and equals the SHA-256 of the exported head. What it does **not**
//! verify: the TSA's CMS signature over the signed attributes, the TSA
//! certificate and its chain, its `timeStamping` extended key usage, and the
//! ESS signing-certificate attribute. Check those with the TSA's CA
//! certificate: `openssl ts -verify -in head.tsr -data head.json -CAfile tsa-ca.pem`.

use sha2::{Digest, Sha256};

/// DER of the SHA-256 algorithm OID, 2.16.840.1.101.3.4.2.1.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-signedData, 1.2.840.113549.1.7.2.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// id-ct-TSTInfo, 1.2.840.113549.1.9.16.1.4.
const OID_TST_INFO: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const NULL: u8 = 0x05;
const BOOLEAN: u8 = 0x01;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;

/// What a time-stamp response says, once its imprint has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampInfo {
    /// PKIStatus: 0 granted, 1 granted with modifications.
    pub status: u64,
    /// The TSA's time, as the GeneralizedTime text (e.g. `20261201160000Z`).
    pub gen_time: String,
    /// The TSA's serial number of the token, hex.
    pub serial: String,
    /// The nonce echoed back, hex, if any.
    pub nonce: Option<String>,
}

/// An RFC 3161 `TimeStampReq` (DER) over the SHA-256 `digest`: version 1,
/// the message imprint, `nonce`, and `certReq` TRUE so the response carries
/// the TSA certificate.
pub fn request(digest: &[u8; 32], nonce: u64) -> Vec<u8> {
    let mut body = tlv(INTEGER, &[1]);
    body.extend(message_imprint(digest));
    body.extend(tlv(INTEGER, &unsigned(&nonce.to_be_bytes())));
    body.extend(tlv(BOOLEAN, &[0xff]));
    tlv(SEQUENCE, &body)
}

/// Checks a `TimeStampResp` (DER) against the exact bytes it should stamp
/// (see the module documentation for what is and is not verified). The
/// error says why, never echoing the input.
pub fn check_response(data: &[u8], tsr: &[u8]) -> Result<TimestampInfo, String> {
    let (info, imprint) = parse_response(tsr)?;
    let digest: [u8; 32] = Sha256::digest(data).into();
    if imprint != digest {
        return Err(
            "its message imprint is not the SHA-256 of this head: it was made for a different head"
                .into(),
        );
    }
    Ok(info)
}

/// The SHA-256 message imprint a response stamps, for finding its head.
pub fn response_imprint(tsr: &[u8]) -> Result<[u8; 32], String> {
    parse_response(tsr).map(|(_, imprint)| imprint)
}

/// Reads the status, the TSTInfo fields and the SHA-256 imprint.
fn parse_response(tsr: &[u8]) -> Result<(TimestampInfo, [u8; 32]), String> {
    let bad = |what: &str| format!("not a valid time-stamp response ({what})");
    let (resp, rest) = take(tsr, SEQUENCE).ok_or_else(|| bad("outer sequence"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let (status_info, resp) = take(resp, SEQUENCE).ok_or_else(|| bad("status"))?;
    let (status, _) = take(status_info, INTEGER).ok_or_else(|| bad("status"))?;
    let status = small_uint(status).ok_or_else(|| bad("status"))?;
    if status > 1 {
        return Err(format!(
            "the time-stamp authority refused the request (status {status})"
        ));
    }
    let (content_info, _) = take(resp, SEQUENCE).ok_or_else(|| bad("no time-stamp token"))?;
    let (oid, ci) = take(content_info, OID).ok_or_else(|| bad("content type"))?;
    if oid != OID_SIGNED_DATA {
        return Err(bad("the token is not CMS SignedData"));
    }
    let (explicit, _) = take(ci, CONTEXT_0).ok_or_else(|| bad("signed data"))?;
    let (signed, _) = take(explicit, SEQUENCE).ok_or_else(|| bad("signed data"))?;
    let (_, signed) = take(signed, INTEGER).ok_or_else(|| bad("signed data version"))?;
    let (_, signed) = take(signed, SET).ok_or_else(|| bad("digest algorithms"))?;
    let (encap, _) = take(signed, SEQUENCE).ok_or_else(|| bad("encapsulated content"))?;
    let (oid, encap) = take(encap, OID).ok_or_else(|| bad("encapsulated content type"))?;
    if oid != OID_TST_INFO {
        return Err(bad("the content is not a TSTInfo"));
    }
    let (explicit, _) = take(encap, CONTEXT_0).ok_or_else(|| bad("TSTInfo"))?;
    let (octets, _) = take(explicit, OCTET_STRING).ok_or_else(|| bad("TSTInfo"))?;
    let (tst, _) = take(octets, SEQUENCE).ok_or_else(|| bad("TSTInfo"))?;
    let (_, tst) = take(tst, INTEGER).ok_or_else(|| bad("TSTInfo version"))?;
    let (_, tst) = take(tst, OID).ok_or_else(|| bad("TSTInfo policy"))?;
    let (imprint, tst) = take(tst, SEQUENCE).ok_or_else(|| bad("message imprint"))?;
    let (alg, imprint) = take(imprint, SEQUENCE).ok_or_else(|| bad("message imprint"))?;
    let (alg_oid, _) = take(alg, OID).ok_or_else(|| bad("message imprint"))?;
    if alg_oid != OID_SHA256 {
        return Err("its message imprint is not SHA-256".into());
    }
    let (hash, _) = take(imprint, OCTET_STRING).ok_or_else(|| bad("message imprint"))?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| bad("message imprint length"))?;
    let (serial, tst) = take(tst, INTEGER).ok_or_else(|| bad("serial number"))?;
    let (gen_time, mut tst) = take(tst, GENERALIZED_TIME).ok_or_else(|| bad("time"))?;
    // Optional accuracy (SEQUENCE) and ordering (BOOLEAN), then the nonce.
    if let Some((_, r)) = take(tst, SEQUENCE) {
        tst = r;
    }
    if let Some((_, r)) = take(tst, BOOLEAN) {
        tst = r;
    }
    let nonce = take(tst, INTEGER).map(|(n, _)| hex::encode(n));
    let gen_time = std::str::from_utf8(gen_time)
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad("time"))?
        .to_owned();
    Ok((
        TimestampInfo {
            status,
            gen_time,
            serial: hex::encode(serial),
            nonce,
        },
        hash,
    ))
}

/// `MessageImprint ::= SEQUENCE { AlgorithmIdentifier sha256 (NULL params), OCTET STRING }`.
fn message_imprint(digest: &[u8; 32]) -> Vec<u8> {
    let mut alg = tlv(OID, OID_SHA256);
    alg.extend(tlv(NULL, &[]));
    let mut mi = tlv(SEQUENCE, &alg);
    mi.extend(tlv(OCTET_STRING, digest));
    tlv(SEQUENCE, &mi)
}

/// One DER element: tag, definite length, content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The content octets of a non-negative INTEGER: no leading zeros, and one
/// zero byte in front when the top bit is set.
fn unsigned(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count().min(be.len() - 1);
    let mut out = Vec::new();
    if be[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&be[skip..]);
    out
}

/// Reads one element with tag `tag` (single-byte tags, definite lengths of
/// up to 4 bytes): its content and what follows it.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (l as usize, rest)
    } else {
        let n = (l & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// A small non-negative INTEGER's value.
fn small_uint(content: &[u8]) -> Option<u64> {
    if content.is_empty() || content.len() > 8 || content[0] & 0x80 != 0 {
        return None;
    }
    Some(content.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_the_expected_der() {
        let req = request(&[0xab; 32], 0x80);
        let mut expected = vec![
            0x30, 0x3d, 0x02, 0x01, 0x01, 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09,
        ];
        expected.extend_from_slice(OID_SHA256);
        expected.extend_from_slice(&[0x05, 0x00, 0x04, 0x20]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0x02, 0x02, 0x00, 0x80, 0x01, 0x01, 0xff]);
        assert_eq!(req, expected);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [0x30, 0x02, 0x06, 0x04, 0xa0, 0x82, 0x00, 0x01][(x % 8) as usize]
                })
                .collect();
            assert!(check_response(b"head", &bytes).is_err());
        }
    }
}
