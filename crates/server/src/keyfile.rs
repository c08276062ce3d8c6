//! The connect-token private key file (`auth.key_file`): exactly 32 raw bytes.
//!
//! `serve` calls [`load_or_create`]: an existing file is read (and must be 32 bytes); a missing
//! one is created with a random key (OS RNG), mode 0600 on Unix, and its path logged at info.
//! `token` and `check-config` call [`load`] / [`check`], which never create anything.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Key length in bytes (netcode 1.02 uses a 32-byte ChaCha20-Poly1305 key).
pub const KEY_BYTES: usize = 32;

/// What went wrong with the key file.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file could not be read (or its metadata could not be queried).
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path names something other than a regular file (a directory, a FIFO, ...).
    NotAFile {
        /// The key file.
        path: PathBuf,
        /// What it is instead, with its article (`a directory`).
        kind: &'static str,
    },
    /// The file exists but is not 32 bytes long.
    WrongLength {
        /// The key file.
        path: PathBuf,
        /// Its actual length in bytes.
        len: u64,
    },
    /// A missing file could not be created or written.
    Create {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The OS random number generator failed.
    Random(getrandom::Error),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Read { path, source } => {
                write!(f, "cannot read key file {}: {source}", path.display())
            }
            KeyFileError::NotAFile { path, kind } => write!(
                f,
                "key file {} is {kind}, not a regular file; auth.key_file must name a file \
                 holding exactly {KEY_BYTES} raw bytes (or a path where none exists yet, to have \
                 a new random key created)",
                path.display()
            ),
            KeyFileError::WrongLength { path, len } => write!(
                f,
                "key file {} is {len} bytes long; it must hold exactly {KEY_BYTES} raw bytes \
                 (delete it to have a new random key created)",
                path.display()
            ),
            KeyFileError::Create { path, source } => {
                write!(f, "cannot create key file {}: {source}", path.display())
            }
            KeyFileError::Random(e) => write!(f, "cannot generate a random key: {e}"),
        }
    }
}

/// The OS error is part of the message (`Display`), so it is not also returned as the
/// `source`: an error chain printed with `{:#}` would show it twice.
impl std::error::Error for KeyFileError {}

/// State of a key file, as seen by [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFileStatus {
    /// The file exists and holds 32 bytes.
    Present,
    /// The file does not exist; `serve` will create it.
    Missing,
}

/// Reads the 32-byte key at `path`; errors when it is missing or has the wrong length.
pub fn load(path: &Path) -> Result<[u8; KEY_BYTES], KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    // Check the type and size first, so that a directory, a FIFO (which would block the
    // read) or a huge file named by mistake is never opened or read into memory.
    let meta = fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta.file_type()),
        });
    }
    let len = meta.len();
    if len != KEY_BYTES as u64 {
        return Err(KeyFileError::WrongLength {
            path: path.to_owned(),
            len,
        });
    }
    let bytes = fs::read(path).map_err(read_err)?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyFileError::WrongLength {
        path: path.to_owned(),
        len: bytes.len() as u64,
    })
}

/// What a non-regular file is, for messages.
fn file_kind(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

/// Reports whether `path` holds a valid key or is missing, without creating anything.
pub fn check(path: &Path) -> Result<KeyFileStatus, KeyFileError> {
    match load(path) {
        Ok(_) => Ok(KeyFileStatus::Present),
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(KeyFileStatus::Missing)
        }
        Err(e) => Err(e),
    }
}

/// Reads the key at `path`, or creates the file with a fresh random key (mode 0600 on Unix,
/// never overwriting: `create_new`) when it does not exist, logging the path at info.
pub fn load_or_create(path: &Path) -> Result<[u8; KEY_BYTES], KeyFileError> {
    match load(path) {
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => {
            if other.is_ok() {
                warn_if_readable_by_others(path);
            }
            return other;
        }
    }
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(KeyFileError::Random)?;
    match create_new(path, &key) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new random connect-token key file");
            Ok(key)
        }
        // Lost a race with another process creating it: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(path),
        Err(source) => Err(KeyFileError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

fn create_new(path: &Path, key: &[u8; KEY_BYTES]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(key).and_then(|()| file.sync_all());
    if written.is_err() {
        // Do not leave a short key behind: the next start would refuse it.
        let _ = fs::remove_file(path);
    }
    written
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:04o}"),
                    "key file is readable by group/others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tickwire-keyfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_when_missing_then_reads_back() {
        let dir = temp_dir("create");
        let path = dir.join("tickwire.key");
        assert_eq!(check(&path).unwrap(), KeyFileStatus::Missing);
        let key = load_or_create(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), key);
        assert_ne!(key, [0u8; KEY_BYTES], "random key should not be all zeros");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(load_or_create(&path).unwrap(), key);
        assert_eq!(load(&path).unwrap(), key);
        assert_eq!(check(&path).unwrap(), KeyFileStatus::Present);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_existing_key() {
        let dir = temp_dir("existing");
        let path = dir.join("k");
        let key: [u8; KEY_BYTES] = std::array::from_fn(|i| i as u8);
        fs::write(&path, key).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), key);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_length_names_path_and_length() {
        let dir = temp_dir("wrong");
        let path = dir.join("short.key");
        fs::write(&path, [1u8; 31]).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::WrongLength { len: 31, .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("short.key") && msg.contains("31 bytes"),
            "{msg}"
        );
        fs::write(&path, [1u8; 33]).unwrap();
        assert!(matches!(
            check(&path),
            Err(KeyFileError::WrongLength { len: 33, .. })
        ));
        // The bad file is left alone, never overwritten.
        assert_eq!(fs::read(&path).unwrap().len(), 33);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn directory_and_fifo_are_named_as_such() {
        let dir = temp_dir("kinds");
        let e = load_or_create(&dir).unwrap_err();
        assert!(matches!(e, KeyFileError::NotAFile { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("is a directory, not a regular file") && !msg.contains("bytes long"),
            "{msg}"
        );
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let msg = check(&fifo).unwrap_err().to_string();
                assert!(
                    msg.contains("is a FIFO (named pipe), not a regular file"),
                    "{msg}"
                );
            }
            let msg = load(Path::new("/dev/null")).unwrap_err().to_string();
            assert!(msg.contains("is a character device"), "{msg}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn os_error_is_in_the_message_once() {
        let dir = temp_dir("oserr");
        let file = dir.join("plain");
        fs::write(&file, b"x").unwrap();
        let e = load(&file.join("k")).unwrap_err();
        assert!(std::error::Error::source(&e).is_none());
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(chain.matches("os error").count(), 1, "{chain}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_directory_is_a_create_error() {
        let dir = temp_dir("nodir");
        let path = dir.join("no/such/dir/k");
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::Create { .. }), "{e}");
        assert!(e.to_string().contains("no/such/dir/k"));
        assert!(matches!(load(&path), Err(KeyFileError::Read { .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
