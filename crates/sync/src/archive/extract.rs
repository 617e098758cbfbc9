//! Reading an archive: every regular file is copied into a spool directory while it is hashed,
//! so each entry is known by name, digest and size before anything enters the cache. An entry
//! named `blobs/<alg>/<hex>` must hash to that digest; an entry shorter than its header says
//! (a truncated archive) or a header that cannot be read (a corrupt one) is an error naming
//! the entry.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ferry_oci::digest::Algorithm;
use ferry_oci::{Digest, DigestVerifier};

use super::ArchiveError;

/// One file of the archive, spooled.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Where its bytes are now.
    pub path: PathBuf,
    /// Digest of its bytes (sha256, or the algorithm its `blobs/` name says).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// Every file of an archive, by entry name (without a leading `./`).
#[derive(Debug, Default)]
pub struct Extracted {
    /// The files.
    pub files: HashMap<String, Spooled>,
}

impl Extracted {
    /// The file `name`, or an error naming it as missing.
    pub fn get(&self, name: &str, why: &str) -> Result<&Spooled, ArchiveError> {
        self.files
            .get(name)
            .ok_or_else(|| ArchiveError::entry(name, format!("missing from the archive ({why})")))
    }

    /// A file whose content is `d` (under `blobs/`, or any name: docker-save layer tars), if
    /// the archive has one.
    pub fn blob(&self, d: &Digest) -> Option<&Spooled> {
        self.files
            .get(&blob_name(d))
            .or_else(|| self.files.values().find(|f| f.digest == *d))
    }

    /// Reads a whole (small) file.
    pub fn read(&self, name: &str, why: &str) -> Result<Vec<u8>, ArchiveError> {
        let f = self.get(name, why)?;
        std::fs::read(&f.path).map_err(ArchiveError::io(&f.path))
    }
}

/// `blobs/<alg>/<hex>`.
pub fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// Copies every file of the tar `archive` into `dir`, hashing and checking each.
pub fn extract(archive: &Path, dir: &Path) -> Result<Extracted, ArchiveError> {
    let file = std::fs::File::open(archive).map_err(ArchiveError::io(archive))?;
    std::fs::create_dir_all(dir).map_err(ArchiveError::io(dir))?;
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut out = Extracted::default();
    let mut last = String::from("(the first entry)");
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::entry(&last, format!("not a tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| {
            ArchiveError::entry(&format!("after {last}"), format!("unreadable header: {e}"))
        })?;
        let name = entry_name(&entry);
        last = name.clone();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let spooled = spool(&mut entry, &name, &dir.join(format!("{n:06}")))?;
        out.files.insert(name, spooled);
    }
    Ok(out)
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    raw.trim_start_matches("./").to_owned()
}

/// The digest an entry's name promises (`blobs/sha256/<hex>`), if it names one.
fn promised(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

fn spool<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    path: &Path,
) -> Result<Spooled, ArchiveError> {
    let expected = entry.header().size().unwrap_or(0);
    let want = promised(name);
    let mut v = match &want {
        Some(d) => DigestVerifier::for_digest(d),
        None => DigestVerifier::new(Algorithm::Sha256),
    };
    let file = std::fs::File::create(path).map_err(ArchiveError::io(path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| ArchiveError::entry(name, format!("unreadable: {e}")))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
        w.write_all(&buf[..n]).map_err(ArchiveError::io(path))?;
        got += n as u64;
    }
    if got != expected {
        return Err(ArchiveError::entry(
            name,
            format!("truncated: {got} of {expected} bytes (the archive is cut short)"),
        ));
    }
    let file = w.into_inner().map_err(|e| ArchiveError::Io {
        path: path.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(ArchiveError::io(path))?;
    let digest = v.finish();
    if let Some(want) = want
        && want != digest
    {
        return Err(ArchiveError::entry(
            name,
            format!("content hashes to {digest}, not the digest its name says"),
        ));
    }
    Ok(Spooled {
        path: path.to_owned(),
        digest,
        size: got,
    })
}
