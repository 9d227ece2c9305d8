//! The stat cache: remembered file hashes by (path, size, mtime, inode), so a warm run does
//! not read its images again. The hash stays the truth: any change of size, mtime or inode
//! (an in-place edit, a copy over the file) makes the file be hashed again.
//!
//! Kept as `stat-cache.tsv` in the cache folder: one `sha256 size mtime_ns inode path` line
//! (tab-separated) per file, sorted by path. It is not parsed into a map: a scan looks its
//! files up in path order, so each lookup is the line after the last one (a merge, reading
//! the file front to back); a lookup out of that order (a new file, a caller in no order)
//! binary-searches the text. At 25,000 images a map took 19 ms of CPU to build and 8 ms of
//! cache misses to query, a third of a warm run. A file out of order (edited by hand) only
//! costs misses, which hash the files again; the next save writes it sorted.

use std::collections::BTreeMap;
use std::path::Path;

use crate::data::file::{FileStat, map_file};
use anyhow::Result;

/// See the module documentation.
#[derive(Default)]
pub struct StatCache {
    /// `stat-cache.tsv`, mapped (it is only ever replaced by a rename, never written in
    /// place); `None` when absent or empty.
    map: Option<memmap2::Mmap>,
    /// Files hashed in this run; they override the file's lines.
    added: BTreeMap<String, (FileStat, String)>,
    /// Whether `added` holds anything the file does not (a run saves after every stage).
    unsaved: std::sync::atomic::AtomicBool,
    /// The image folders' remembered listings (`folders.tsv`), loaded and saved beside.
    pub folders: crate::data::walk::Listings,
}

/// Where the last in-order lookup ended (a byte offset into the file's text), and room to
/// spell the line the next one expects.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    at: usize,
    expected: Vec<u8>,
}

/// The line of `text` starting at byte `at`, if it is well formed. Parsed by hand: this runs
/// once per image on every warm run.
fn parse_line(text: &[u8], at: usize) -> Option<Line<'_>> {
    let rest = text.get(at..)?;
    let (line, next) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], at + end + 1),
        None => (rest, text.len()),
    };
    let (sha256, mut rest) = (line.get(..64)?, line.get(64..)?);
    if !hex_digits(sha256) {
        return None;
    }
    let mut field = || -> Option<i128> {
        let digits = rest.strip_prefix(b"\t")?;
        let (negative, digits) = match digits.strip_prefix(b"-") {
            Some(d) => (true, d),
            None => (false, digits),
        };
        let len = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
        if len == 0 || len > 38 {
            return None;
        }
        let value = digits[..len].iter().fold(0i128, |v, d| v * 10 + i128::from(d - b'0'));
        rest = &digits[len..];
        Some(if negative { -value } else { value })
    };
    let stat = FileStat {
        size: u64::try_from(field()?).ok()?,
        mtime_ns: field()?,
        inode: u64::try_from(field()?).ok()?,
    };
    let path = std::str::from_utf8(rest.strip_prefix(b"\t")?).ok()?;
    Some(Line {
        path,
        stat,
        sha256: std::str::from_utf8(sha256).ok()?,
        next,
    })
}

/// One parsed line: path, stat, hash, and the offset of the next line.
struct Line<'a> {
    path: &'a str,
    stat: FileStat,
    sha256: &'a str,
    next: usize,
}

impl StatCache {
    /// Reads `path`; an unreadable file is an empty cache (its files are just hashed again).
    pub fn load(path: &Path) -> StatCache {
        StatCache {
            map: map_file(path),
            ..StatCache::default()
        }
    }

    /// The file's bytes.
    fn text(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The remembered hash of `path` if its stat still matches.
    pub fn get(&self, path: &str, stat: FileStat) -> Option<&str> {
        self.get_from(&mut Cursor::default(), path, stat)
    }

    /// As `get`, for lookups made in path order: each starts where the last one ended.
    pub fn get_from(&self, cursor: &mut Cursor, path: &str, stat: FileStat) -> Option<&str> {
        if !self.added.is_empty()
            && let Some((s, sha)) = self.added.get(path)
        {
            return (*s == stat).then_some(sha.as_str());
        }
        // The usual case: the line at the cursor is this file with this stat, byte for byte
        // (no parsing: this runs once per image on every warm run).
        cursor.expected.clear();
        for (i, n) in [i128::from(stat.size), stat.mtime_ns, i128::from(stat.inode)]
            .into_iter()
            .enumerate()
        {
            cursor.expected.push(b'\t');
            push_decimal(&mut cursor.expected, n);
            if i == 2 {
                cursor.expected.push(b'\t');
            }
        }
        cursor.expected.extend_from_slice(path.as_bytes());
        cursor.expected.push(b'\n');
        let end = cursor.at + 64 + cursor.expected.len();
        if let Some(line) = self.text().get(cursor.at..end)
            && line[64..] == cursor.expected[..]
            && hex_digits(&line[..64])
        {
            let sha = std::str::from_utf8(&line[..64]).ok()?;
            cursor.at = end;
            return Some(sha);
        }
        let line = match self.line_at(cursor.at) {
            Some(line) if line.path == path => line,
            _ => {
                cursor.at = self.seek(path);
                match self.line_at(cursor.at) {
                    Some(line) if line.path == path => line,
                    _ => return None,
                }
            }
        };
        cursor.at = line.next;
        (line.stat == stat).then_some(line.sha256)
    }

    /// Remembers `sha256` for `path` (saved by `save`).
    pub fn put(&mut self, path: String, stat: FileStat, sha256: &str) {
        if self.get(&path, stat) != Some(sha256) {
            self.added.insert(path, (stat, sha256.to_string()));
            *self.unsaved.get_mut() = true;
        }
    }

    /// Writes the file again if anything was put; a path with a tab or newline cannot be a
    /// line and is left out (hashed anew each run).
    pub fn save(&self, path: &Path, write: impl FnOnce(&Path, &[u8]) -> Result<()>) -> Result<()> {
        if !self.unsaved.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let mut lines: BTreeMap<&str, String> = BTreeMap::new();
        let mut at = 0;
        let text = self.text();
        while at < text.len() {
            let next = self.line_end(at);
            if let Some(l) = self.line_at(at) {
                let line = String::from_utf8_lossy(&text[at..next]);
                lines.insert(l.path, format!("{}\n", line.trim_end_matches('\n')));
            }
            at = next;
        }
        for (p, (s, sha)) in &self.added {
            if !p.contains(['\t', '\n']) {
                lines.insert(p, format!("{sha}\t{}\t{}\t{}\t{p}\n", s.size, s.mtime_ns, s.inode));
            }
        }
        let text: String = lines.into_values().collect();
        // A failed write is tried again at the next save.
        write(path, text.as_bytes()).inspect_err(|_| self.unsaved.store(true, std::sync::atomic::Ordering::Relaxed))
    }

    /// The line starting at byte `at`, if it is well formed.
    fn line_at(&self, at: usize) -> Option<Line<'_>> {
        parse_line(self.text(), at)
    }

    /// The remembered hash and stat of `path`, whatever its stat is now.
    pub fn entry(&self, path: &str) -> Option<(FileStat, &str)> {
        if let Some((stat, sha)) = self.added.get(path) {
            return Some((*stat, sha.as_str()));
        }
        let line = self.line_at(self.seek(path)).filter(|l| l.path == path)?;
        Some((line.stat, line.sha256))
    }

    /// Learns the lines of another stat cache's text (a finished shard's files) that this one
    /// does not know; malformed lines are skipped.
    pub fn absorb(&mut self, text: &[u8]) {
        let mut at = 0;
        while at < text.len() {
            let next = text[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |e| at + e + 1);
            if let Some(line) = parse_line(text, at)
                && self.get(line.path, line.stat).is_none()
            {
                self.put(line.path.to_string(), line.stat, line.sha256);
            }
            at = next;
        }
    }

    /// The text of a stat cache holding `entries` (path, stat, hash), as `save` writes it.
    pub fn text_of<'a>(entries: impl IntoIterator<Item = (String, FileStat, &'a str)>) -> Vec<u8> {
        let mut cache = StatCache::default();
        for (path, stat, sha) in entries {
            cache.put(path, stat, sha);
        }
        let mut out = Vec::new();
        let _ = cache.save(Path::new(""), |_, bytes| {
            out = bytes.to_vec();
            Ok(())
        });
        out
    }

    /// The offset just past the line starting at `at` (its newline included).
    fn line_end(&self, at: usize) -> usize {
        let text = self.text();
        text[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |e| at + e + 1)
    }

    /// The offset of the first well-formed line whose path is not before `path` (the end of
    /// the text if none): a binary search over the text's bytes that steps over malformed
    /// lines.
    fn seek(&self, path: &str) -> usize {
        let bytes = self.text();
        // The first well-formed line starting in `from..to`.
        let well_formed = |mut at: usize, to: usize| {
            while at < to {
                if let Some(line) = self.line_at(at) {
                    return Some((at, line));
                }
                at = self.line_end(at);
            }
            None
        };
        // Well-formed lines starting before `lo` are before `path`; those from `hi` on are not.
        let (mut lo, mut hi) = (0, bytes.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let start = bytes[lo..mid]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(lo, |i| lo + i + 1);
            match well_formed(start, hi) {
                Some((at, line)) if line.path < path => lo = line.next.max(at + 1),
                _ => hi = start,
            }
        }
        well_formed(lo, bytes.len()).map_or(bytes.len(), |(at, _)| at)
    }
}

/// Whether every byte is a hex digit; without an early exit, so it vectorizes (a byte at
/// a time, this check was most of a lookup).
fn hex_digits(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let lower = b | 0x20;
        ok & (b.is_ascii_digit() | (b'a'..=b'f').contains(&lower))
    })
}

/// Appends `n` in decimal, as `{}` formats it.
fn push_decimal(out: &mut Vec<u8>, n: i128) {
    let Ok(mut u) = u64::try_from(n.unsigned_abs()) else {
        out.extend_from_slice(n.to_string().as_bytes());
        return;
    };
    if n < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn stat(n: u64) -> FileStat {
        FileStat {
            size: n,
            mtime_ns: 1_700_000_000_123_456_789 + i128::from(n),
            inode: 1000 + n,
        }
    }

    fn sha(n: u64) -> String {
        format!("{n:064x}")
    }

    /// A cache holding `names` (file `name` with stat and hash numbered by position), saved
    /// and read back.
    fn saved(dir: &Path, names: &[&str]) -> StatCache {
        let mut c = StatCache::default();
        for (i, n) in names.iter().enumerate() {
            c.put(n.to_string(), stat(i as u64), &sha(i as u64));
        }
        let path = dir.join("stat-cache.tsv");
        c.save(&path, |p, b| Ok(fs::write(p, b)?)).unwrap();
        StatCache::load(&path)
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pipeline-stat-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lookups_in_order_out_of_order_and_missing() {
        let dir = tempdir("order");
        let names = ["d/b.jpg", "a.jpg", "d/a.jpg", "c.jpg"];
        let c = saved(&dir, &names);
        let text = fs::read_to_string(dir.join("stat-cache.tsv")).unwrap();
        let paths: Vec<&str> = text.lines().map(|l| l.rsplit('\t').next().unwrap()).collect();
        assert_eq!(paths, ["a.jpg", "c.jpg", "d/a.jpg", "d/b.jpg"], "saved sorted by path");
        let mut cur = Cursor::default();
        // In order, with a missing file in the middle and one out of order at the end.
        assert_eq!(c.get_from(&mut cur, "a.jpg", stat(1)), Some(sha(1).as_str()));
        assert_eq!(c.get_from(&mut cur, "b.jpg", stat(9)), None);
        assert_eq!(c.get_from(&mut cur, "c.jpg", stat(3)), Some(sha(3).as_str()));
        assert_eq!(c.get_from(&mut cur, "d/a.jpg", stat(2)), Some(sha(2).as_str()));
        assert_eq!(c.get_from(&mut cur, "d/b.jpg", stat(0)), Some(sha(0).as_str()));
        assert_eq!(c.get_from(&mut cur, "a.jpg", stat(1)), Some(sha(1).as_str()));
        assert_eq!(c.get_from(&mut cur, "zz.jpg", stat(1)), None);
        // A changed stat (size, mtime or inode) is not a hit.
        for changed in [
            FileStat { size: 7, ..stat(3) },
            FileStat { mtime_ns: 5, ..stat(3) },
            FileStat { inode: 5, ..stat(3) },
        ] {
            assert_eq!(c.get("c.jpg", changed), None);
        }
    }

    #[test]
    fn hex_digits_only() {
        assert!(hex_digits(sha(0xabcdef).as_bytes()));
        assert!(hex_digits(b"0123456789abcdefABCDEF"));
        for bad in [b"g".as_slice(), b"/", b":", b"@", b"`", b"G", b" ", b"\t", &[0xc1]] {
            assert!(!hex_digits(bad), "{bad:?}");
        }
    }

    #[test]
    fn decimals_as_formatted() {
        for n in [
            0,
            7,
            -7,
            10,
            1_795_779_470_585_402_962,
            i128::from(u64::MAX),
            i128::MAX,
            i128::MIN,
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn put_overrides_and_save_merges() {
        let dir = tempdir("merge");
        let mut c = saved(&dir, &["a.jpg", "b.jpg"]);
        c.put("b.jpg".into(), stat(7), &sha(7));
        c.put("0.jpg".into(), stat(8), &sha(8));
        assert_eq!(c.get("b.jpg", stat(7)), Some(sha(7).as_str()));
        assert_eq!(c.get("b.jpg", stat(1)), None);
        let path = dir.join("stat-cache.tsv");
        c.save(&path, |p, b| Ok(fs::write(p, b)?)).unwrap();
        let c = StatCache::load(&path);
        assert_eq!(c.get("0.jpg", stat(8)), Some(sha(8).as_str()));
        assert_eq!(c.get("a.jpg", stat(0)), Some(sha(0).as_str()));
        assert_eq!(c.get("b.jpg", stat(7)), Some(sha(7).as_str()));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn malformed_and_unsorted_lines() {
        let dir = tempdir("bad");
        let path = dir.join("stat-cache.tsv");
        let line = |n: u64, p: &str| format!("{}\t{}\t{}\t{}\t{p}\n", sha(n), n, stat(n).mtime_ns, stat(n).inode);
        let text = [
            "not a line\n".to_string(),
            line(1, "a.jpg"),
            line(2, "b.jpg"),
            format!("{}\tx\t1\t1\tc.jpg\n", sha(3)),
            format!("{}\t3\t1\t1\tc2.jpg\n", &sha(3)[1..]),
            line(4, "d.jpg").trim_end().to_string(),
        ]
        .concat();
        fs::write(&path, text).unwrap();
        let c = StatCache::load(&path);
        // The search steps over malformed lines.
        for (key, hit) in [
            ("d.jpg", true),
            ("b.jpg", true),
            ("a.jpg", true),
            ("c.jpg", false),
            ("c2.jpg", false),
        ] {
            let n = u64::from(key.as_bytes()[0] - b'a' + 1);
            assert_eq!(c.get(key, stat(n)), hit.then(|| sha(n)).as_deref(), "{key}");
        }
        let mut cur = Cursor::default();
        assert_eq!(c.get_from(&mut cur, "a.jpg", stat(1)), Some(sha(1).as_str()));
        assert_eq!(c.get_from(&mut cur, "b.jpg", stat(2)), Some(sha(2).as_str()));
        assert_eq!(c.get_from(&mut cur, "c.jpg", stat(3)), None);
        assert_eq!(c.get_from(&mut cur, "c2.jpg", stat(3)), None);
        assert_eq!(c.get_from(&mut cur, "d.jpg", stat(4)), Some(sha(4).as_str()));
        assert_eq!(StatCache::load(&dir.join("absent")).get("a.jpg", stat(1)), None);
        // The next save keeps the well-formed lines only.
        let mut c = c;
        c.put("e.jpg".into(), stat(5), &sha(5));
        c.save(&path, |p, b| Ok(fs::write(p, b)?)).unwrap();
        let kept: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.rsplit('\t').next().unwrap().to_string())
            .collect();
        assert_eq!(kept, ["a.jpg", "b.jpg", "d.jpg", "e.jpg"]);

        // Out of order (edited by hand): lookups may miss but never give a wrong hash, and
        // the next save writes it sorted.
        fs::write(&path, [line(3, "c.jpg"), line(1, "a.jpg"), line(2, "b.jpg")].concat()).unwrap();
        let mut c = StatCache::load(&path);
        for (n, key) in [(1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg")] {
            if let Some(h) = c.get(key, stat(n)) {
                assert_eq!(h, sha(n));
            }
        }
        c.put("e.jpg".into(), stat(5), &sha(5));
        c.save(&path, |p, b| Ok(fs::write(p, b)?)).unwrap();
        let c = StatCache::load(&path);
        for (n, key) in [(1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg"), (5, "e.jpg")] {
            assert_eq!(c.get(key, stat(n)), Some(sha(n).as_str()), "{key} after the save");
        }
    }
}
