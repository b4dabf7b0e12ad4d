"""cagerisk.hashing against a known digest (FIPS 180-2's "abc" example), across chunk boundaries."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cagerisk.hashing import file_sha256


def test_file_sha256_known_answer_and_large_file(tmp_path: Path):
    small = tmp_path / "abc.txt"
    small.write_bytes(b"abc")
    assert file_sha256(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big.bin"
    payload = bytes(range(256)) * 9000  # 2.2 MiB: three chunks
    big.write_bytes(payload)
    assert file_sha256(str(big)) == hashlib.sha256(payload).hexdigest()
