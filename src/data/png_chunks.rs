//! A walk over a PNG's chunks, without decoding a pixel, for a second try at a file the
//! `image` crate refuses but Pillow and OpenCV decode: one with a critical chunk nobody knows
//! (its type's first letter is upper case, so the PNG rules say "refuse", yet libpng-based
//! readers and Pillow skip it when the image chunks are intact).

/// The critical chunks of the PNG standard: header, palette, data and end.
const KNOWN: [&[u8; 4]; 4] = [b"IHDR", b"PLTE", b"IDAT", b"IEND"];

/// `bytes` without critical chunks of unknown type, or `None` when there are none or the
/// chunk layout is broken (then the first error stands).
pub fn without_unknown_critical(bytes: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return None;
    }
    let mut out = SIGNATURE.to_vec();
    let mut at = SIGNATURE.len();
    let mut dropped = false;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind: &[u8; 4] = bytes.get(at + 4..at + 8)?.try_into().ok()?;
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = bytes.get(at..end)?;
        if kind[0].is_ascii_uppercase() && !KNOWN.contains(&kind) {
            dropped = true;
        } else {
            out.extend_from_slice(chunk);
        }
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    dropped.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    }

    #[test]
    fn unknown_critical_chunks_go_and_the_rest_stays() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &[0; 13]));
        let kept = png.clone();
        png.extend(chunk(b"ABCD", b"xyz"));
        let mut tail = chunk(b"tEXt", b"a\0b");
        tail.extend(chunk(b"IDAT", &[1, 2]));
        tail.extend(chunk(b"IEND", &[]));
        png.extend(&tail);
        let mut expected = kept;
        expected.extend(&tail);
        assert_eq!(without_unknown_critical(&png), Some(expected.clone()));
        assert_eq!(without_unknown_critical(&expected), None);
        for cut in 0..png.len() {
            let _ = without_unknown_critical(&png[..cut]);
        }
    }
}
