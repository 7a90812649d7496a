//! Secrets: store passwords sealed at rest with an AEAD cipher (its key read from the
//! environment or the data directory), and redaction of anything that looks like credentials in
//! text headed for a log or a client. The `Secret` type itself is the domain's
//! ([`crate::domain::secret`]), re-exported here.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub use crate::domain::secret::Secret;

/// Seals and opens store passwords. The key comes from `SLUICE_SECRET_KEY` (base64 of 32 bytes)
/// or from `secret.key` in the data directory, created with mode 0600 on first start.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

const SEALED_PREFIX: &str = "v1:";
pub const KEY_ENV: &str = "SLUICE_SECRET_KEY";

/// Why the secret key cannot be loaded, or a stored password not opened. Never quotes a key
/// or a password.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `SLUICE_SECRET_KEY` is not the base64 of a key.
    #[error("{KEY_ENV} is not valid base64")]
    EnvKeyNotBase64,
    #[error("{KEY_ENV} must be the base64 of exactly 32 bytes")]
    EnvKeyLength,
    /// The key file is not the base64 of a key.
    #[error("{} is not valid base64", .0.display())]
    FileKeyNotBase64(PathBuf),
    #[error("{} must hold the base64 of 32 bytes", .0.display())]
    FileKeyLength(PathBuf),
    /// The key file could not be read or created (`action`).
    #[error("cannot {action} {}: {source}", .path.display())]
    KeyFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A plaintext beyond what the cipher can take (gigabytes).
    #[error("the password could not be encrypted")]
    TooLong,
    #[error("sealed secret has an unknown format")]
    UnknownFormat,
    #[error("sealed secret is not valid base64")]
    SealedNotBase64,
    #[error("sealed secret is truncated")]
    Truncated,
    /// It does not decrypt with this key.
    #[error(
        "cannot decrypt a stored password: the secret key changed (check SLUICE_SECRET_KEY or data_dir/secret.key)"
    )]
    KeyChanged,
    #[error("decrypted password is not UTF-8")]
    NotUtf8,
}

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Cipher {
            aead: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Loads the key from the environment or the key file, creating the file if neither exists.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        if let Ok(encoded) = std::env::var(KEY_ENV) {
            let bytes = B64
                .decode(encoded.trim())
                .map_err(|_| SecretError::EnvKeyNotBase64)?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::EnvKeyLength)?;
            return Ok(Self::from_key(&key));
        }
        let path = data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(encoded) => {
                let Ok(bytes) = B64.decode(encoded.trim()) else {
                    return Err(SecretError::FileKeyNotBase64(path));
                };
                let Ok(key) = <[u8; 32]>::try_from(bytes) else {
                    return Err(SecretError::FileKeyLength(path));
                };
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                // Instances starting at once on one new data directory agree on one key.
                let written = match create_once(&path, B64.encode(key).as_bytes()) {
                    Ok(written) => written,
                    Err(source) => {
                        return Err(SecretError::KeyFile {
                            action: "create",
                            path,
                            source,
                        })
                    }
                };
                if written {
                    return Ok(Self::from_key(&key));
                }
                Self::load_or_create(data_dir)
            }
            Err(source) => Err(SecretError::KeyFile {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Encrypts `plain`; fails only for a plaintext beyond what the cipher can take (gigabytes).
    pub fn seal(&self, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .map_err(|_| SecretError::TooLong)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    /// The password `sealed` by [`Cipher::seal`] with this key.
    pub fn open(&self, sealed: &str) -> Result<Secret, SecretError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::UnknownFormat)?;
        let bytes = B64.decode(body).map_err(|_| SecretError::SealedNotBase64)?;
        if bytes.len() < 24 {
            return Err(SecretError::Truncated);
        }
        let (nonce, data) = bytes.split_at(24);
        let plain = self
            .aead
            .decrypt(XNonce::from_slice(nonce), data)
            .map_err(|_| SecretError::KeyChanged)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SecretError::NotUtf8)
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// Creates `path` holding `contents` (readable by this user only) unless it exists; returns
/// whether this call created it. The file appears whole or not at all (written aside, then
/// linked into place), so processes starting at once on one shared data directory all read the
/// one that won.
pub fn create_once(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let aside = path.with_extension(format!("new-{:016x}", rand::random::<u64>()));
    write_private_file(&aside, contents)?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

// A literal pattern, compiled by every test run: it cannot fail at run time.
#[allow(clippy::expect_used)]
static URL_CREDENTIALS: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
        .expect("static regex")
});

#[allow(clippy::expect_used)]
static PASSWORD_PAIRS: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)(?P<key>password|passwd|pwd)(?P<sep>\s*[=:]\s*)(?P<val>'[^']*'|\x22[^\x22]*\x22|[^\s;,&]+)",
    )
    .expect("static regex")
});

/// Removes credentials from text: `scheme://user:pw@` becomes `scheme://user:***@`, and
/// `password=...` pairs lose their value.
pub fn redact_urls(text: &str) -> String {
    let text = URL_CREDENTIALS.replace_all(text, "${scheme}${user}:***@");
    PASSWORD_PAIRS.replace_all(&text, "${key}${sep}***").into_owned()
}

/// Removes credentials from text, and every occurrence of the given secrets.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = redact_urls(text);
    for s in secrets {
        if s.expose().len() >= 3 {
            out = out.replace(s.expose(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_created_once_even_by_several_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let won: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = path.clone();
                    scope.spawn(move || create_once(&path, &[b'a' + i; 16]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let contents = std::fs::read(&path).unwrap();
        assert_eq!(contents.len(), 16);
        assert!(
            contents.iter().all(|b| *b == contents[0]),
            "one writer's whole file"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left aside"
        );
        let cipher = Cipher::load_or_create(dir.path());
        assert!(cipher.is_err(), "not a key: said so, not replaced");
    }

    #[test]
    fn seal_and_open_round_trip_with_random_nonces() {
        let c = Cipher::from_key(&[7u8; 32]);
        let a = c.seal("s3cret").unwrap();
        let b = c.seal("s3cret").unwrap();
        assert_ne!(a, b);
        assert!(!a.contains("s3cret"));
        assert_eq!(c.open(&a).unwrap().expose(), "s3cret");
        let other = Cipher::from_key(&[8u8; 32]);
        assert!(other
            .open(&a)
            .unwrap_err()
            .to_string()
            .contains("secret key changed"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c1 = Cipher::load_or_create(dir.path()).unwrap();
        let sealed = c1.seal("x").unwrap();
        let c2 = Cipher::load_or_create(dir.path()).unwrap();
        assert_eq!(c2.open(&sealed).unwrap().expose(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("secret.key"), "c2hvcnQ=").unwrap();
        let short = Cipher::load_or_create(dir.path()).err().map(|e| e.to_string());
        let expected = format!(
            "{} must hold the base64 of 32 bytes",
            dir.path().join("secret.key").display()
        );
        assert_eq!(short, Some(expected));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_urls("error connecting to postgres://app:s3cret@db:5432/shop"),
            "error connecting to postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact_urls("host=x password=s3cret user=y"),
            "host=x password=*** user=y"
        );
        let s = Secret::new("hunter22".into());
        assert_eq!(redact("bad hunter22!", &[&s]), "bad ***!");
    }
}
