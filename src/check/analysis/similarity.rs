//! Which images in different partitions are the same picture: identical content ids
//! (duplicates) and thumbnails that correlate above a threshold (near-duplicates).

use std::collections::HashMap;

use crate::check::analysis::Pair;

/// Side of the grayscale thumbnail compared to find near-duplicates.
const THUMB: usize = 8;

/// A perceptual fingerprint of one image: its grayscale thumbnail (THUMB x THUMB box
/// averages), centred and scaled to unit length, so the dot product of two is their
/// correlation. It survives re-encoding, value scaling and offsets (every normalization
/// stage), unlike a hash of the bytes. On the shipped photos, JPEG re-encodes (quality 50-90)
/// keep a correlation of at least 0.991 with their originals, while the closest two distinct
/// photos reach 0.969 (a shifted crop of the same cat); the default threshold is 0.985.
/// `None` for a flat image, which correlates with nothing.
pub fn thumbprint(row: &[f32], shape: [usize; 3]) -> Option<Vec<f32>> {
    let [h, w, c] = shape;
    let (gh, gw) = (THUMB.min(h).max(1), THUMB.min(w).max(1));
    let mut cells = vec![0f64; gh * gw];
    let mut counts = vec![0u32; gh * gw];
    for y in 0..h {
        for x in 0..w {
            let cell = (y * gh / h) * gw + x * gw / w;
            cells[cell] += row[(y * w + x) * c..][..c].iter().map(|&v| f64::from(v)).sum::<f64>();
            counts[cell] += 1;
        }
    }
    for (v, n) in cells.iter_mut().zip(&counts) {
        *v /= f64::from((*n).max(1));
    }
    let mean = cells.iter().sum::<f64>() / cells.len() as f64;
    let norm = cells.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
    (norm > 1e-9 * cells.len() as f64).then(|| cells.iter().map(|v| ((v - mean) / norm) as f32).collect())
}

fn correlation(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Content ids found in more than one partition, as pairs sorted by path.
pub fn cross_partition_duplicates(by_id: &HashMap<String, Vec<(String, String)>>) -> Vec<Pair> {
    let mut out: Vec<Pair> = by_id
        .values()
        .filter_map(|members| {
            let first = &members[0];
            let other = members.iter().find(|(_, p)| *p != first.1)?;
            Some(Pair {
                a: first.0.clone(),
                a_partition: first.1.clone(),
                b: other.0.clone(),
                b_partition: other.1.clone(),
                similarity: 1.0,
            })
        })
        .collect();
    out.sort_by(|x, y| x.a.cmp(&y.a));
    out
}

/// The perceptual fingerprint of one image with what names it.
pub struct Print {
    pub thumb: Vec<f32>,
    pub path: String,
    pub partition: String,
    pub id: String,
}

/// Pairs of images in different partitions whose thumbnails correlate at least `limit`
/// (identical content ids are reported as duplicates instead), most similar first, and the
/// most similar cross-partition pair overall. Compares every cross-partition pair in
/// parallel: 64 multiply-adds per pair.
pub fn near_duplicate_pairs(prints: &[Print], limit: f32) -> (Vec<Pair>, Option<Pair>) {
    use rayon::prelude::*;
    let pair = |a: &Print, b: &Print, similarity| Pair {
        a: a.path.clone(),
        a_partition: a.partition.clone(),
        b: b.path.clone(),
        b_partition: b.partition.clone(),
        similarity,
    };
    /// Per row: its near-duplicates and its most similar partner (similarity, i, j).
    type RowResult = (Vec<Pair>, Option<(f32, usize, usize)>);
    let per_row: Vec<RowResult> = (0..prints.len())
        .into_par_iter()
        .map(|i| {
            let a = &prints[i];
            let mut found = Vec::new();
            let mut best: Option<(f32, usize, usize)> = None;
            for (j, b) in prints.iter().enumerate().skip(i + 1) {
                if a.partition == b.partition || a.id == b.id {
                    continue;
                }
                let s = correlation(&a.thumb, &b.thumb);
                if best.is_none_or(|(bs, _, _)| s > bs) {
                    best = Some((s, i, j));
                }
                if s >= limit {
                    found.push(pair(a, b, s));
                }
            }
            (found, best)
        })
        .collect();
    let mut out: Vec<Pair> = per_row.iter().flat_map(|(f, _)| f.iter().cloned()).collect();
    out.sort_by(|x, y| y.similarity.total_cmp(&x.similarity));
    let closest = per_row
        .iter()
        .filter_map(|(_, b)| *b)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(s, i, j)| pair(&prints[i], &prints[j], s));
    (out, closest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_survive_value_scaling_and_tell_images_apart() {
        let shape = [32, 32, 3];
        let img: Vec<f32> = (0..32 * 32 * 3)
            .map(|i| ((i / 3 % 32 + i / 96) * 4 % 255) as f32)
            .collect();
        let scaled: Vec<f32> = img.iter().map(|v| v / 64.0 - 2.0).collect();
        let other: Vec<f32> = (0..32 * 32 * 3).map(|i| ((i * 104729 + 13) % 251) as f32).collect();
        let a = thumbprint(&img, shape).unwrap();
        let b = thumbprint(&scaled, shape).unwrap();
        let c = thumbprint(&other, shape).unwrap();
        assert!(correlation(&a, &b) > 0.9999);
        assert!(correlation(&a, &c) < 0.5);
        assert!(
            thumbprint(&[7.0; 32 * 32 * 3], shape).is_none(),
            "a flat image has no thumbprint"
        );
    }

    fn print(path: &str, partition: &str, id: &str, thumb: Vec<f32>) -> Print {
        Print {
            thumb,
            path: path.into(),
            partition: partition.into(),
            id: id.into(),
        }
    }

    #[test]
    fn near_duplicates_are_cross_partition_pairs_above_the_limit() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let prints = [
            print("a", "train", "1", vec![1.0, 0.0]),
            print("b", "test", "2", vec![s, s]),
            print("c", "train", "3", vec![s, s]),
            print("d", "test", "1", vec![1.0, 0.0]),
        ];
        let (pairs, closest) = near_duplicate_pairs(&prints, 0.9);
        let named: Vec<(&str, &str)> = pairs.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
        assert_eq!(
            named,
            [("b", "c")],
            "same partition and same id are not near-duplicates"
        );
        let closest = closest.unwrap();
        assert_eq!((closest.a.as_str(), closest.b.as_str()), ("b", "c"));
        let mut by_id: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for p in &prints {
            by_id
                .entry(p.id.clone())
                .or_default()
                .push((p.path.clone(), p.partition.clone()));
        }
        let dups = cross_partition_duplicates(&by_id);
        assert_eq!(dups.len(), 1);
        assert_eq!(
            (dups[0].a.as_str(), dups[0].b.as_str(), dups[0].similarity),
            ("a", "d", 1.0)
        );
    }
}
