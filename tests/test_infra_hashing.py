"""cxrl.infra.hashing: the project's sha256 digests."""

from __future__ import annotations

import hashlib

import pytest

from cxrl.infra.hashing import sha256_file, sha256_json, sha256_tree

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc"), FIPS 180-2


def test_file_digest_is_the_standard_sha256(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert sha256_file(tmp_path / "a") == ABC
    big = tmp_path / "big"
    big.write_bytes(b"abc" * (1 << 19))  # spans several read chunks
    assert sha256_file(big) != ABC and len(sha256_file(big)) == 64


def test_tree_digest_covers_names_contents_and_suffix_filter(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("ignored")
    base = sha256_tree(tmp_path, (".safetensors", ".json"))
    (tmp_path / "notes.txt").write_text("changed")
    assert sha256_tree(tmp_path, (".safetensors", ".json")) == base  # filtered out
    assert sha256_tree(tmp_path) != base
    (tmp_path / "sub" / "w.safetensors").rename(tmp_path / "sub" / "v.safetensors")
    assert sha256_tree(tmp_path, (".safetensors", ".json")) != base  # same bytes, new name
    with pytest.raises(NotADirectoryError):
        sha256_tree(tmp_path / "config.json")


def test_json_digest_ignores_key_order_only():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 1.5})
    assert sha256_json("abc") != ABC  # of the JSON text '"abc"', not of the raw string
    # the anchor cache's keys hash exactly this text, so they stay what they were
    assert sha256_json(["v1", "effusion.", 3]) == hashlib.sha256(b'["v1", "effusion.", 3]').hexdigest()
