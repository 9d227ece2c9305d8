//! Numerical building blocks shared by every model type: a bounds-checked
//! wrapper around the `gemm` crate's sgemm, the seeded random streams used for
//! weight init and shuffling, and a numerically stable softmax cross-entropy.
//!
//! Randomness only uses the raw ChaCha8 output words (`next_u64`): the
//! normal draws (Box–Muller) and the shuffle (Fisher–Yates with rejection
//! sampling) are implemented here, so results cannot change when a `rand`
//! release changes its distribution algorithms.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// Number of elements a strided `rows × cols` view touches (0 if empty).
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major view (`cols` contiguous values per row).
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: cols, cs: 1 }
    }
    /// Transpose of a row-major `? × cols` matrix.
    pub fn rows_t(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: 1, cs: cols }
    }
}

/// `C = A·B + beta·C` with `A` m×k, `B` k×n and `C` m×n row-major.
///
/// Single-threaded sgemm (`gemm`'s `Parallelism::None`; its AVX-512 kernels where the
/// CPU has them, the `x86-v4` feature), so the summation order, and therefore every bit
/// of the result, is fixed for a given CPU feature set.
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    assert!(
        a.data.len() >= span(m, k, a.rs, a.cs),
        "gemm: A slice too short for {m}x{k} (internal shape bug)"
    );
    assert!(
        b.data.len() >= span(k, n, b.rs, b.cs),
        "gemm: B slice too short for {k}x{n} (internal shape bug)"
    );
    assert!(
        c.len() >= m * n,
        "gemm: C slice too short for {m}x{n} (internal shape bug)"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    // SAFETY: the asserts above prove every strided index of A, B and C lies
    // inside its slice; C is a unique borrow, so it cannot alias A or B.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            beta,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Adds `bias[j]` to column `j` of every row of the row-major `z`.
pub(crate) fn add_bias_rows(z: &mut [f32], bias: &[f32]) {
    for row in z.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// Column sums of a row-major matrix with `cols` columns (bias gradients).
pub(crate) fn col_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; cols];
    for row in m.chunks_exact(cols) {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += f64::from(*v));
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Sum of squares accumulated in f64.
pub(crate) fn sum_sq(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum()
}

/// Independent ChaCha8 stream for `(seed, stream, purpose)`.
///
/// The 32-byte key is `seed LE ‖ stream LE ‖ purpose ‖ 0`, so the init stream
/// and each epoch's shuffle stream never overlap.
pub(crate) fn rng_for(seed: u64, stream: u64, purpose: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(purpose);
    ChaCha8Rng::from_seed(key)
}

/// Uniform draw in the open interval (0, 1) with 53 random bits.
fn uniform_open(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal draw (Box–Muller, cosine branch only).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = uniform_open(rng);
    let u2 = uniform_open(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Unbiased integer in `0..n` (`n > 0`) by rejection sampling.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let limit = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < limit {
            return v % n;
        }
    }
}

/// In-place Fisher–Yates shuffle.
pub(crate) fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Result of [`softmax_xent`].
pub(crate) struct Xent {
    /// Σ over rows of −Σ_j t_j log p_j (t the smoothed target; −log p(y) unsmoothed),
    /// accumulated in f64.
    pub nll_sum: f64,
    /// ∂(mean NLL)/∂logits = (p − t) / batch, row-major batch × classes.
    pub dlogits: Vec<f32>,
    /// Rows whose argmax (lowest index on ties) equals the label.
    pub correct: usize,
}

/// Row-wise softmax in place, via max-subtraction so no `exp` overflows.
pub(crate) fn softmax_rows(z: &mut [f32], classes: usize) {
    for row in z.chunks_exact_mut(classes) {
        let lse = log_sum_exp(row);
        row.iter_mut().for_each(|v| *v = (f64::from(*v) - lse).exp() as f32);
    }
}

/// `max + ln Σ exp(z − max)`, computed in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let max = f64::from(max);
    let s: f64 = row.iter().map(|v| (f64::from(*v) - max).exp()).sum();
    max + s.ln()
}

/// Index of the largest value (lowest index on ties; NaN never wins).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Mean cross-entropy pieces from logits against targets smoothed by `smoothing` (the
/// label's is `1 − smoothing + smoothing/K`, every other class's `smoothing/K`, as PyTorch's
/// `CrossEntropyLoss(label_smoothing)`), using log-softmax `log p = z − logsumexp(z)` so
/// large logits neither overflow nor produce `log(0)`. Labels must already be validated
/// (`< classes`).
pub(crate) fn softmax_xent(logits: &[f32], y: &[u32], classes: usize, smoothing: f32) -> Xent {
    let off = f64::from(smoothing) / classes as f64;
    let on = 1.0 - f64::from(smoothing) + off;
    let batch = y.len();
    let inv_b = 1.0 / batch as f64;
    let mut dlogits = vec![0.0f32; logits.len()];
    let mut nll_sum = 0.0f64;
    let mut correct = 0;
    for ((row, d), &label) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .zip(y)
    {
        let label = label as usize;
        let lse = log_sum_exp(row);
        for (j, (dv, zv)) in d.iter_mut().zip(row).enumerate() {
            let p = (f64::from(*zv) - lse).exp();
            let t = if j == label { on } else { off };
            if t > 0.0 {
                nll_sum += t * (lse - f64::from(*zv));
            }
            *dv = ((p - t) * inv_b) as f32;
        }
        if argmax(row) == label {
            correct += 1;
        }
    }
    Xent {
        nll_sum,
        dlogits,
        correct,
    }
}
