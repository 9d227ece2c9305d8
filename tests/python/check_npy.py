#!/usr/bin/env python3
"""Check that NumPy reads a .npy file (written by the Rust codec) exactly as expected.

usage: check_npy.py PATH EXPECTED_JSON

EXPECTED_JSON (inline, or the path of a file holding it) is {"dtype": "float32" | "uint8", "shape": [...], "bits": [...]} where "bits" are
the elements in C order: the IEEE-754 bit patterns as integers for float32 (so NaN and -0.0 are
compared exactly), the values themselves for uint8. Also checks the layout the spec asks for:
format version 1.0, C order, data aligned to 64 bytes. Prints one "ok ..." line, or the first
mismatch on stderr with exit status 1.
"""
import json
import sys

try:
    import numpy as np
except ImportError:
    sys.exit("numpy is not installed for this python3: python3 -m pip install numpy")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, expected = sys.argv[1], sys.argv[2]
    if not expected.lstrip().startswith("{"):
        with open(expected, encoding="utf-8") as f:
            expected = f.read()
    expected = json.loads(expected)

    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        data_offset = f.tell()
    problems = []
    if version != (1, 0):
        problems.append(f"version {version}, expected (1, 0)")
    if fortran:
        problems.append("fortran_order is True")
    if data_offset % 64:
        problems.append(f"data starts at byte {data_offset}, not a multiple of 64")

    arr = np.load(path, allow_pickle=False)
    if str(arr.dtype) != expected["dtype"]:
        problems.append(f"dtype {arr.dtype}, expected {expected['dtype']}")
    if list(arr.shape) != expected["shape"]:
        problems.append(f"shape {arr.shape}, expected {tuple(expected['shape'])}")
    if not problems:
        got = arr.reshape(-1).view(np.uint32) if arr.dtype == np.float32 else arr.reshape(-1)
        want = np.array(expected["bits"], dtype=got.dtype)
        if not np.array_equal(got, want):
            first = int(np.flatnonzero(got != want)[0])
            problems.append(f"element {first}: got {got[first]}, expected {want[first]}")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))
    print(f"ok {arr.dtype} {arr.shape} sum={float(arr.astype(np.float64).sum(where=~np.isnan(arr)))}")


if __name__ == "__main__":
    main()
