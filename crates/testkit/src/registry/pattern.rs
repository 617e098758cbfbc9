//! Content generated lazily from a seed, so a large blob costs no memory.

use super::*;

/// Length of the per-seed base block; a prime, so rotations never line up with powers of two.
const PATTERN_BASE: usize = 1_048_573;

fn pattern_base(seed: u64) -> Arc<Vec<u8>> {
    static BASES: OnceLock<Mutex<HashMap<u64, Arc<Vec<u8>>>>> = OnceLock::new();
    let bases = BASES.get_or_init(Default::default);
    if let Some(b) = bases.lock().unwrap().get(&seed) {
        return b.clone();
    }
    let mut base = Vec::with_capacity(PATTERN_BASE + 32);
    let mut counter = 0u64;
    while base.len() < PATTERN_BASE {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(counter.to_le_bytes());
        base.extend_from_slice(&h.finalize());
        counter += 1;
    }
    base.truncate(PATTERN_BASE);
    let base = Arc::new(base);
    bases.lock().unwrap().insert(seed, base.clone());
    base
}

/// Fills `out` with the pattern bytes of `seed` starting at `offset`. Byte `i` of the pattern is
/// `base[(i mod B + (i div B) * 7919) mod B]` for a pseudo-random base block `B` bytes long, so
/// any range can be produced with a few copies and no two MiB of a blob are alike.
pub fn pattern_fill(seed: u64, mut offset: u64, out: &mut [u8]) {
    let base = pattern_base(seed);
    let b = base.len() as u64;
    let mut done = 0;
    while done < out.len() {
        let segment = offset / b;
        let within = offset % b;
        let take = ((b - within) as usize).min(out.len() - done);
        let start = ((within + (segment * 7919) % b) % b) as usize;
        let first = take.min(base.len() - start);
        out[done..done + first].copy_from_slice(&base[start..start + first]);
        if first < take {
            out[done + first..done + take].copy_from_slice(&base[..take - first]);
        }
        done += take;
        offset += take as u64;
    }
}

/// `len` pattern bytes of `seed` from `offset`.
pub fn pattern_bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    pattern_fill(seed, offset, &mut out);
    out
}

/// The digest of the first `size` pattern bytes of `seed` (cached per process).
pub fn pattern_digest(seed: u64, size: u64) -> String {
    static DIGESTS: OnceLock<Mutex<HashMap<(u64, u64), String>>> = OnceLock::new();
    let digests = DIGESTS.get_or_init(Default::default);
    if let Some(d) = digests.lock().unwrap().get(&(seed, size)) {
        return d.clone();
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        pattern_fill(seed, offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    digests.lock().unwrap().insert((seed, size), digest.clone());
    digest
}
