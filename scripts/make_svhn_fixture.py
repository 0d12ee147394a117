#!/usr/bin/env python3
"""Writes fixtures/svhn-tiny/: two tiny SVHN-format MAT v5 files written by scipy (not by dpaudit),
so the Rust reader is checked against an independent writer. Deterministic; needs numpy + scipy.

  X: 32 x 32 x 3 x 5 uint8, X[r, c, ch, k] = (r + 2*c + 5*ch + 11*k) % 256
  y: 5 x 1 double, labels 1..10 (10 = digit 0): [10, 1, 2, 9, 10]

tiny_32x32.mat is zlib-compressed (like the real SVHN files), tiny_plain_32x32.mat is not.
Usage: python3 scripts/make_svhn_fixture.py
"""
import pathlib

import numpy as np
import scipy.io

out = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "svhn-tiny"
out.mkdir(parents=True, exist_ok=True)
r, c, ch, k = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), np.arange(5), indexing="ij")
X = ((r + 2 * c + 5 * ch + 11 * k) % 256).astype(np.uint8)
y = np.array([[10], [1], [2], [9], [10]], dtype=np.float64)
for name, compress in [("tiny_32x32.mat", True), ("tiny_plain_32x32.mat", False)]:
    # scipy writes a timestamp into the 116-byte header text; pin it for determinism.
    path = out / name
    scipy.io.savemat(path, {"other": np.zeros((2, 2)), "X": X, "y": y}, do_compression=compress, format="5")
    b = bytearray(path.read_bytes())
    text = b"MATLAB 5.0 MAT-file Platform: posix, Created on: Thu Jan  1 00:00:00 1970"
    b[:116] = text.ljust(116, b" ")
    path.write_bytes(bytes(b))
    print(path, len(b), "bytes")
