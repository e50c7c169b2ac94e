//! Identities: the ed25519 keypair that signs a feed, and the public key that names it.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::block::{BlockError, BlockId, Signature};

/// The public half of an identity: 32 bytes of a compressed Edwards point.
///
/// A `PublicKey` is only bytes; it is checked (decompressed, weak keys refused) when a block
/// signed by it is verified, so decoding untrusted input never pays for point decompression.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, the form the CLI prints.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks `signature` over `id` with the strict rules every acceptance path shares:
    /// the key must decompress, must not be of small order (a "weak" key), and the signature
    /// must pass `verify_strict` (canonical `s`, `R` not of small order).
    ///
    /// # Errors
    /// [`BlockError::BadKey`], [`BlockError::WeakKey`] or [`BlockError::BadSignature`].
    pub fn verify(&self, id: &BlockId, signature: &Signature) -> Result<(), BlockError> {
        verify_with(&self.verifying_key()?, id, signature)
    }

    /// The decompressed key, refusing invalid points and weak (small-order) keys. Kernels cache
    /// the result per author so a feed pays for decompression once.
    pub(crate) fn verifying_key(&self) -> Result<VerifyingKey, BlockError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| BlockError::BadKey)?;
        if key.is_weak() {
            return Err(BlockError::WeakKey);
        }
        Ok(key)
    }
}

/// `verify_strict` of `signature` over `id` by an already checked key.
pub(crate) fn verify_with(
    key: &VerifyingKey,
    id: &BlockId,
    signature: &Signature,
) -> Result<(), BlockError> {
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(id.as_bytes(), &sig)
        .map_err(|_| BlockError::BadSignature)
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 keypair that signs blocks.
///
/// Cloning an identity copies the secret; keep clones to the places that sign.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh random identity from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// The identity whose secret key is `secret` (the 32-byte seed). Deterministic: tests
    /// and the simulator derive identities from seeds.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret seed, for persisting the identity.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key that names this identity's feed.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs a block id.
    pub fn sign(&self, id: &BlockId) -> Signature {
        Signature(self.key.sign(id.as_bytes()).to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}
