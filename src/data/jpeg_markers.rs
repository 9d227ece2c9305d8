//! A walk over a JPEG's marker segments, without decoding a pixel: where its end-of-image
//! marker is (a file that stops before it is truncated, and is refused, as Pillow refuses it;
//! OpenCV would fill the missing part with grey), and a copy without the segments libjpeg
//! skips but the Rust decoders refuse (a short Adobe APP14, say), for a second try.
//!
//! The layout, from ITU T.81 B.1: `FF D8`, then segments `FF m` + a big-endian length that
//! counts itself; standalone markers (`D0`–`D7`, `01`) have no length; after each start of
//! scan (`DA`) come entropy-coded bytes, in which `FF` is followed only by `00` (a stuffed
//! byte) or a restart marker, so the next other `FF m` ends the scan. `FF` bytes before a
//! marker are fill.

/// What the walk found.
#[derive(Debug, PartialEq, Eq)]
pub enum Walk {
    /// The file reaches its end-of-image marker (or, for [`header`], its first scan);
    /// `segments` lists every marker segment before it, as (marker, offset of its `FF`,
    /// length in bytes including marker and length field).
    Complete { segments: Vec<(u8, usize, usize)> },
    /// The data stops at `at` before the end-of-image marker.
    Truncated { at: usize },
}

/// Walks `bytes`, which start with `FF D8` (else `Truncated { at: 0 }`), to the end.
pub fn walk(bytes: &[u8]) -> Walk {
    walk_to(bytes, false)
}

/// [`walk`] up to the first start of scan (included), skipping the entropy-coded data: what
/// the frame and application segments say, at the cost of the header alone.
pub fn header(bytes: &[u8]) -> Walk {
    walk_to(bytes, true)
}

fn walk_to(bytes: &[u8], header_only: bool) -> Walk {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Walk::Truncated { at: 0 };
    }
    let mut segments = Vec::new();
    let mut i = 2;
    loop {
        // Anything but FF where a marker belongs is skipped, as libjpeg does (it warns of
        // "extraneous bytes before marker"); FF bytes are fill.
        let Some(ff) = memchr::memchr(0xFF, &bytes[i.min(bytes.len())..]) else {
            return Walk::Truncated { at: bytes.len() };
        };
        i += ff;
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return Walk::Truncated { at: bytes.len() };
        };
        let start = i - 1;
        i += 1;
        match marker {
            0xD9 => return Walk::Complete { segments },
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Walk::Truncated { at: bytes.len() };
        };
        if i + len > bytes.len() {
            return Walk::Truncated { at: bytes.len() };
        }
        i += len.max(2);
        segments.push((marker, start, 2 + len));
        if marker == 0xDA && header_only {
            return Walk::Complete { segments };
        }
        if marker == 0xDA {
            // Entropy-coded data: up to the first FF not followed by 00, a restart or fill.
            loop {
                let Some(ff) = memchr::memchr(0xFF, &bytes[i..]) else {
                    return Walk::Truncated { at: bytes.len() };
                };
                i += ff;
                match bytes.get(i + 1) {
                    None => return Walk::Truncated { at: bytes.len() },
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

/// A JPEG coding the decoders here do not read, named for the user from its frame header
/// (`SOFn`) — `None` for baseline and progressive Huffman-coded 8-bit JPEGs (`SOF0`–`SOF2`).
pub fn unsupported_coding(bytes: &[u8], segments: &[(u8, usize, usize)]) -> Option<String> {
    let &(marker, offset, _) = segments
        .iter()
        .find(|(m, ..)| matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF))?;
    let precision = bytes.get(offset + 4).copied().unwrap_or(8);
    let sof = marker - 0xC0;
    let coding = match marker {
        0xC9..=0xCB | 0xCD..=0xCF => "arithmetic-coded",
        0xC3 => "lossless",
        0xC5..=0xC7 => "hierarchical",
        _ if precision != 8 => {
            return Some(format!(
                "{precision}-bit samples (SOF{sof}), which the decoders here do not read; save it as an 8-bit JPEG or a PNG"
            ));
        }
        _ => return None,
    };
    Some(format!(
        "{coding} (SOF{sof}), which the decoders here do not read; convert it to a baseline JPEG \
         (`jpegtran -outfile out.jpg in.jpg` does it without loss for arithmetic coding) or a PNG"
    ))
}

/// Whether a segment is one the pixels do not need and a decoder may choke on: comments and
/// application segments, except the Exif block (orientation) and a well-formed Adobe APP14
/// (it says how CMYK and YCCK data are stored).
fn droppable(bytes: &[u8], (marker, offset, len): (u8, usize, usize)) -> bool {
    let payload = bytes.get(offset + 4..offset + len).unwrap_or_default();
    match marker {
        0xE1 => !payload.starts_with(b"Exif\0"),
        0xEE => !(payload.starts_with(b"Adobe") && payload.len() >= 12),
        0xE0..=0xEF | 0xFE => true,
        _ => false,
    }
}

/// `bytes` without the segments [`droppable`] names, or `None` when there are none.
pub fn without_skippable_segments(bytes: &[u8]) -> Option<Vec<u8>> {
    let Walk::Complete { segments } = walk(bytes) else {
        return None;
    };
    let drop: Vec<(usize, usize)> = segments
        .into_iter()
        .filter(|s| droppable(bytes, *s))
        .map(|(_, offset, len)| (offset, offset + len))
        .collect();
    if drop.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (from, to) in drop {
        out.extend_from_slice(&bytes[at..from]);
        at = to;
    }
    out.extend_from_slice(&bytes[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0, a tiny scan with a stuffed byte and a restart, EOI.
    fn tiny() -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F']);
        out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        out.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    #[test]
    fn a_complete_file_lists_its_segments_and_every_cut_is_truncated() {
        let jpeg = tiny();
        assert_eq!(
            walk(&jpeg),
            Walk::Complete {
                segments: vec![(0xE0, 2, 8), (0xDA, 10, 5)]
            }
        );
        for cut in 0..jpeg.len() {
            assert!(matches!(walk(&jpeg[..cut]), Walk::Truncated { .. }), "cut at {cut}");
        }
        // The header stops at the scan: a file cut inside the scan data still has one.
        assert_eq!(
            header(&jpeg[..17]),
            Walk::Complete {
                segments: vec![(0xE0, 2, 8), (0xDA, 10, 5)]
            }
        );
        // Trailing bytes after the end (another program's data) are left alone.
        let mut longer = jpeg.clone();
        longer.extend_from_slice(b"trailing");
        assert!(matches!(walk(&longer), Walk::Complete { .. }));
    }

    #[test]
    fn skippable_segments_go_and_the_rest_stays() {
        let jpeg = tiny();
        let mut with = jpeg[..2].to_vec();
        with.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x09, b'A', b'd', b'o', b'b', b'e', 0, 0x64]);
        with.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x02]);
        with.extend_from_slice(&jpeg[2..]);
        let cleaned = without_skippable_segments(&with).unwrap();
        // The short Adobe segment, the empty comment and the JFIF APP0 go.
        let mut expected = jpeg[..2].to_vec();
        expected.extend_from_slice(&jpeg[10..]);
        assert_eq!(cleaned, expected);
        assert_eq!(without_skippable_segments(&expected), None);
    }

    #[test]
    fn codings_the_decoders_lack_are_named() {
        let with_frame = |marker: u8, precision: u8| {
            let mut b = vec![
                0xFF, 0xD8, 0xFF, marker, 0x00, 0x0B, precision, 0, 8, 0, 8, 1, 1, 0x11, 0,
            ];
            b.extend_from_slice(&[0xFF, 0xD9]);
            b
        };
        let name = |marker, precision| {
            let b = with_frame(marker, precision);
            let Walk::Complete { segments } = walk(&b) else {
                panic!("{b:?}")
            };
            unsupported_coding(&b, &segments)
        };
        assert_eq!(name(0xC0, 8), None);
        assert_eq!(name(0xC2, 8), None);
        assert!(name(0xC9, 8).unwrap().starts_with("arithmetic-coded (SOF9)"));
        assert!(name(0xC3, 8).unwrap().starts_with("lossless (SOF3)"));
        assert!(name(0xC1, 12).unwrap().starts_with("12-bit samples (SOF1)"));
    }

    #[test]
    fn no_input_panics() {
        let jpeg = tiny();
        for i in 0..jpeg.len() {
            for v in [0x00, 0xFF, 0xD9, 0xDA, 0x01] {
                let mut b = jpeg.clone();
                b[i] = v;
                let _ = walk(&b);
                let _ = without_skippable_segments(&b);
            }
        }
    }
}
