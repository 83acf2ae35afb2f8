//! Contractor signing keys: generation, storage format and detached
//! co-signatures over a certificate, so the CLI holds no crypto logic.
//!
//! A contractor's private key file holds the 32-byte Ed25519 seed in hex
//! (created 0600); the public key is handed to the vault's admin as PEM.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::certificate;
use crate::error::{Error, Result};
use crate::secret::SecretKey;

/// Generates a key pair; writes the seed (hex) to `path` (0600, must not
/// exist) and returns the public key as PEM.
pub fn generate(path: &Path) -> Result<String> {
    let seed = SecretKey::generate();
    let key = SigningKey::from_bytes(seed.expose());
    let mut f = crate::fsutil::create_private_file(path)?;
    let text = Zeroizing::new(hex::encode(seed.expose()));
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    Ok(certificate::public_key_pem(&key.verifying_key()))
}

/// Reads a private key file written by [`generate`].
pub fn load(path: &Path) -> Result<SigningKey> {
    crate::fsutil::check_private(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| Error::invalid("key file is not a hex Ed25519 seed"))?,
    );
    let seed = SecretKey::from_slice(&bytes)
        .ok_or_else(|| Error::invalid("key file must hold a 32-byte seed"))?;
    Ok(SigningKey::from_bytes(seed.expose()))
}

/// A detached Ed25519 signature over a certificate's signed message.
pub fn sign(cert: &certificate::Certificate, key: &SigningKey) -> Result<[u8; 64]> {
    let msg = certificate::signed_message(&cert.body)?;
    Ok(key.sign(&msg).to_bytes())
}

/// Signs a payload file made for co-signing (`pivault certificate
/// payload`, or the web page's download) on the contractor's own machine:
/// the key never meets the vault. Refuses bytes that are not exactly a
/// certificate's signed message ([`certificate::body_of_message`]), and
/// returns the body signed so that the signer can say what it was.
pub fn sign_payload(payload: &[u8], key: &SigningKey) -> Result<([u8; 64], serde_json::Value)> {
    let body = certificate::body_of_message(payload)?;
    Ok((key.sign(payload).to_bytes(), body))
}
