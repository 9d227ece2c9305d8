//! Pure kernels: pixel math and resizing on slices, apart from all I/O.

pub mod pixel;
pub mod resize;
