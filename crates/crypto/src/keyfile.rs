//! The agent's key pair on disk: one file, mode 0600 in a 0700 directory, written atomically,
//! refused when its permissions are too open or its checksum does not match.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::mldsa::{PUBLIC_KEY_LEN, SECRET_KEY_LEN};
use crate::{Error, Result, SigningKey};

const MAGIC: &[u8; 5] = b"X0KEY";
const VERSION: u8 = 1;
const ALGORITHM_ML_DSA_65: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 1 + 8 + 4;
const FILE_LEN: usize = HEADER_LEN + PUBLIC_KEY_LEN + SECRET_KEY_LEN + 32;

/// A key with the epoch it was issued for and its creation time (Unix seconds).
pub struct StoredKey {
    pub key: SigningKey,
    pub epoch: u32,
    pub created_unix: u64,
}

fn error(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes the key to `path` (0600), replacing any previous file atomically.
pub fn save(path: &Path, stored: &StoredKey) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| error(path, format!("cannot create its directory: {e}")))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| error(path, format!("cannot restrict its directory: {e}")))?;
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(FILE_LEN));
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.push(ALGORITHM_ML_DSA_65);
    bytes.extend_from_slice(&stored.created_unix.to_be_bytes());
    bytes.extend_from_slice(&stored.epoch.to_be_bytes());
    bytes.extend_from_slice(stored.key.verifying_key().as_bytes());
    bytes.extend_from_slice(stored.key.secret_bytes());
    let checksum = Sha256::digest(&bytes[..]);
    bytes.extend_from_slice(&checksum);

    let temporary = path.with_extension("tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| error(path, format!("cannot create: {e}")))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| error(path, format!("cannot write: {e}")))?;
    fs::rename(&temporary, path).map_err(|e| error(path, format!("cannot replace: {e}")))?;
    Ok(())
}

/// Reads a key file, refusing one that group or others can read.
pub fn load(path: &Path) -> Result<StoredKey> {
    let metadata = fs::metadata(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(error(
            path,
            format!("permissions {mode:04o} are too open; the key file must be 0600"),
        ));
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| error(path, format!("cannot read: {e}")))?);
    if bytes.len() != FILE_LEN {
        return Err(error(
            path,
            format!("is {} bytes, expected {FILE_LEN}", bytes.len()),
        ));
    }
    let (body, checksum) = bytes.split_at(FILE_LEN - 32);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(error(path, "checksum mismatch (corrupted or truncated)"));
    }
    if &body[..5] != MAGIC || body[5] != VERSION || body[6] != ALGORITHM_ML_DSA_65 {
        return Err(error(path, "not an x0tta6bl4 ML-DSA-65 key file of version 1"));
    }
    let created_unix = u64::from_be_bytes(body[7..15].try_into().expect("8 bytes"));
    let epoch = u32::from_be_bytes(body[15..19].try_into().expect("4 bytes"));
    let public = &body[HEADER_LEN..HEADER_LEN + PUBLIC_KEY_LEN];
    let secret = &body[HEADER_LEN + PUBLIC_KEY_LEN..];
    let key = SigningKey::from_parts(public, secret).map_err(|e| error(path, e.to_string()))?;
    Ok(StoredKey {
        key,
        epoch,
        created_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("x0-keyfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_key_loads_back_with_mode_0600() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("node.key");
        let key = SigningKey::generate().unwrap();
        let public = key.verifying_key().clone();
        save(
            &path,
            &StoredKey {
                key,
                epoch: 7,
                created_unix: 1_700_000_000,
            },
        )
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.epoch, loaded.created_unix), (7, 1_700_000_000));
        assert_eq!(loaded.key.verifying_key(), &public);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_world_readable_or_corrupted_file_is_refused_with_the_reason() {
        let dir = temp_dir("refused");
        let path = dir.join("node.key");
        save(
            &path,
            &StoredKey {
                key: SigningKey::generate().unwrap(),
                epoch: 1,
                created_unix: 0,
            },
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("0644 are too open")
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path).err().unwrap().to_string().contains("checksum"));
        fs::write(&path, &bytes[..100]).unwrap();
        assert!(load(&path).err().unwrap().to_string().contains("expected"));
        fs::remove_dir_all(dir).unwrap();
    }
}
