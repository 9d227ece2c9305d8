//! A walk over a PNG's chunks, without decoding a pixel, for a second try at a file the
//! `image` crate refuses but Pillow decodes: one with a critical chunk nobody knows (its
//! type's first letter is upper case, so the PNG rules say "refuse", yet Pillow skips it when
//! the image chunks are intact), or one whose image data chunks carry a wrong CRC (Pillow
//! checks the CRCs of the chunks it parses, not of the `IDAT` data it inflates: the data
//! still has to inflate to a whole image, so damage in it is still found).

/// The critical chunks of the PNG standard: header, palette, data and end.
const KNOWN: [&[u8; 4]; 4] = [b"IHDR", b"PLTE", b"IDAT", b"IEND"];

/// `bytes` without critical chunks of unknown type and with the CRCs of its image data
/// chunks (`IDAT`, `fdAT`) made right, or `None` when there is nothing to change or the chunk
/// layout is broken (then the first error stands).
pub fn as_pillow_reads_it(bytes: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return None;
    }
    let mut out = SIGNATURE.to_vec();
    let mut at = SIGNATURE.len();
    let mut changed = false;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind: &[u8; 4] = bytes.get(at + 4..at + 8)?.try_into().ok()?;
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = bytes.get(at..end)?;
        if kind[0].is_ascii_uppercase() && !KNOWN.contains(&kind) {
            changed = true;
        } else if kind == b"IDAT" || kind == b"fdAT" {
            let crc = crc32fast::hash(&chunk[4..8 + len]).to_be_bytes();
            changed |= chunk[8 + len..] != crc;
            out.extend_from_slice(&chunk[..8 + len]);
            out.extend_from_slice(&crc);
        } else {
            out.extend_from_slice(chunk);
        }
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32fast::hash(&out[4..]).to_be_bytes());
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
        assert_eq!(as_pillow_reads_it(&png), Some(expected.clone()));
        assert_eq!(as_pillow_reads_it(&expected), None);
        for cut in 0..png.len() {
            let _ = as_pillow_reads_it(&png[..cut]);
        }
        // A wrong CRC on image data is made right; on another chunk it stays (and is refused).
        let mut bad_idat = expected.clone();
        let idat_crc = expected.len() - 12 - 4;
        bad_idat[idat_crc] ^= 1;
        assert_eq!(as_pillow_reads_it(&bad_idat), Some(expected.clone()));
        let mut bad_ihdr = expected.clone();
        bad_ihdr[8 + 8 + 13] ^= 1;
        assert_eq!(as_pillow_reads_it(&bad_ihdr), None);
    }
}
