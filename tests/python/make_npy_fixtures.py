#!/usr/bin/env python3
"""Write small, deterministic .npy fixtures with NumPy for the Rust `npy` codec tests.

usage: make_npy_fixtures.py OUT_DIR

Every value is derived from np.arange, so the Rust side can assert exact values. The files a
reader must reject (Fortran order, object, complex, ...) are written too. Keep the file names and
formulas in sync with `numpy_fixtures_read_back` in src/npy.rs.
"""
import os
import sys

try:
    import numpy as np
except ImportError:
    sys.exit("numpy is not installed for this python3: python3 -m pip install numpy")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    def save(name, arr, **kw):
        np.save(os.path.join(out, name + ".npy"), arr, **kw)

    def write_version(name, arr, version):
        with open(os.path.join(out, name + ".npy"), "wb") as f:
            np.lib.format.write_array(f, arr, version=version)

    # Readable: value i (flat C-order index) -> formula noted on the right.
    save("f32_4d", np.arange(72, dtype=np.float32).reshape(4, 2, 3, 3) * 0.5 - 3)  # i/2 - 3
    save("u8_5x12", (np.arange(60) * 7 % 256).astype(np.uint8).reshape(5, 12))  # (7i) mod 256
    save("f64_3x4", np.arange(12, dtype=np.float64).reshape(3, 4) / 8 - 0.75)  # i/8 - 0.75
    save("i64_2x5", ((np.arange(10, dtype=np.int64) - 5) * 10**9).reshape(2, 5))  # (i-5)*1e9
    save("bool_3", np.array([True, False, True]))
    save("f32_be_2x3", np.arange(6, dtype=">f4").reshape(2, 3) + np.float32(0.25))  # i + 0.25
    write_version("f32_v2_3x2", np.arange(6, dtype=np.float32).reshape(3, 2) - 1, (2, 0))  # i - 1
    write_version("f32_v3_3x2", np.arange(6, dtype=np.float32).reshape(3, 2) - 1, (3, 0))  # i - 1
    save("f32_big_300x100", np.arange(30000, dtype=np.float32).reshape(300, 100))  # i (> 64 KiB)
    save("f32_empty_0x3", np.zeros((0, 3), dtype=np.float32))
    save("f32_scalar", np.float32(1.5))
    # Every other integer type and byte order: 11i + 3 if unsigned, 11i - 30 if signed, shape (6,).
    for tag, descr in [("i1", "|i1"), ("u2le", "<u2"), ("i2be", ">i2"), ("u4le", "<u4"), ("i4le", "<i4"),
                       ("u4be", ">u4"), ("u8le", "<u8"), ("i8be", ">i8"), ("f8be", ">f8")]:
        dt = np.dtype(descr)
        base = np.arange(6) * 11 + (3 if dt.kind == "u" else -30)
        save("dt_" + tag, base.astype(dt))

    # Must be rejected.
    save("fortran_2x3", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    save("object_3", np.array([1, "a", None], dtype=object), allow_pickle=True)
    save("complex64_3", np.arange(3, dtype=np.complex64))
    save("structured_2", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
    save("float16_3", np.arange(3, dtype=np.float16))
    save("unicode_2", np.array(["ab", "c"]))

    # References for the files the Rust writer produces (same values), to compare bytes.
    save("ref_f32_2x3x4", np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3)  # i/2 - 3
    save("ref_u8_5x12", (np.arange(60) * 7 % 256).astype(np.uint8).reshape(5, 12))  # (7i) mod 256


if __name__ == "__main__":
    main()
