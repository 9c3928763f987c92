//! The device key when `DEVICE_KEY` is not set: kept in a file next to the database,
//! `<VENDPAY_DB>.device-key` (hex, mode 0600), created on first start. The admin token when
//! `ADMIN_TOKEN` is not set lives the same way in `<VENDPAY_DB>.admin-token`: the server prints the
//! file's path, never the token, so logs that keep stdout do not keep the token.
//!
//! Every machine secret is derived from this key, so it must outlive restarts exactly as long as the
//! database does: losing it silently would lock every registered machine out. A file beside the database
//! (rather than a table in it) keeps the store crate untouched and lets an operator back up, move or
//! replace the key with `DEVICE_KEY` without opening SQLite.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use vendpay_api::DeviceKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("DEVICE_KEY is not set and the key file {path} cannot be read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("DEVICE_KEY is not set and the key file {path} cannot be written: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Where the key of the database at `db` lives.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".device-key");
    PathBuf::from(p)
}

/// How the key was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Created,
}

/// Loads the key kept for `db`, or creates it.
pub fn load_or_create(db: &Path) -> Result<(DeviceKey, Origin), KeyFileError> {
    load_or_create_at(&path_for(db), read, || {
        let key = DeviceKey::generate()?;
        let hex = key.to_hex();
        Ok::<_, vendpay_api::auth::KeyError>((key, hex))
    })
}

/// The secret in the file at `path`, or a new one from `make` (the value and the text to store),
/// written so that of two processes starting at once both end up with the same secret.
fn load_or_create_at<T, E: std::fmt::Display>(
    path: &Path,
    read: impl Fn(&Path) -> Result<Option<T>, KeyFileError>,
    make: impl FnOnce() -> Result<(T, String), E>,
) -> Result<(T, Origin), KeyFileError> {
    if let Some(secret) = read(path)? {
        return Ok((secret, Origin::Loaded));
    }
    let (secret, text) = make().map_err(|e| KeyFileError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    match write_secret(path, &text) {
        Ok(()) => Ok((secret, Origin::Created)),
        // Another process created it first: theirs is the secret.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read(path)? {
            Some(secret) => Ok((secret, Origin::Loaded)),
            None => Err(KeyFileError::Read {
                path: path.to_owned(),
                reason: "it vanished while being created".into(),
            }),
        },
        Err(e) => Err(KeyFileError::Write {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn read(path: &Path) -> Result<Option<DeviceKey>, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => DeviceKey::from_hex("the device key file", &text)
            .map(Some)
            .map_err(|e| KeyFileError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyFileError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Creates `path` (never overwrites) readable by its owner only, with `secret` and a newline.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()
}

/// Where the generated admin token of the database at `db` lives.
pub fn admin_token_path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".admin-token");
    PathBuf::from(p)
}

/// Loads the admin token kept for `db`, or creates one (32 random bytes, hex) in a 0600 file.
pub fn admin_token(db: &Path) -> Result<(String, Origin), KeyFileError> {
    let read = |path: &Path| -> Result<Option<String>, KeyFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
            Ok(_) => Err(KeyFileError::Read {
                path: path.to_owned(),
                reason: "the admin token file is empty".into(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyFileError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    };
    load_or_create_at(&admin_token_path_for(db), read, || {
        let token = DeviceKey::generate()?.to_hex();
        Ok::<_, vendpay_api::auth::KeyError>((token.clone(), token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v.sqlite");
        let (first, origin) = load_or_create(&db).expect("create");
        assert_eq!(origin, Origin::Created);
        let (again, origin) = load_or_create(&db).expect("load");
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(first.to_hex(), again.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path_for(&db))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_admin_token_is_kept_in_an_owner_only_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v.sqlite");
        let (first, origin) = admin_token(&db).expect("create");
        assert_eq!(origin, Origin::Created);
        assert_eq!(first.len(), 64);
        let (again, origin) = admin_token(&db).expect("load");
        assert_eq!((again.as_str(), origin), (first.as_str(), Origin::Loaded));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(admin_token_path_for(&db))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v.sqlite");
        std::fs::write(path_for(&db), "nope").expect("write");
        let msg = match load_or_create(&db) {
            Ok(_) => panic!("a damaged key file was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("v.sqlite.device-key"), "{msg}");
    }
}
