"""SecretBytes and wipe(): wiping that really happens, no content in repr, buffer semantics."""

from __future__ import annotations

import pytest

from kms_iface import InvalidRequestError, SecretBytes, wipe


def test_zeroize_wipes_content_and_keeps_length() -> None:
    secret = SecretBytes(b"key material 123")
    view = memoryview(secret)
    secret.zeroize()
    assert secret.zeroized
    assert bytes(view) == b"\x00" * 16
    assert len(secret) == 16


def test_context_manager_wipes_on_exit() -> None:
    with SecretBytes(b"pin-1234") as secret:
        view = memoryview(secret)
        assert bytes(view) == b"pin-1234"
    assert bytes(view) == b"\x00" * 8


def test_wipe_zeroes_any_writable_buffer() -> None:
    data = bytearray(b"plaintext")
    wipe(data)
    assert data == bytearray(9)
    with pytest.raises(BufferError):
        wipe(b"immutable")


def test_repr_never_shows_content() -> None:
    secret = SecretBytes(b"top-secret")
    assert "top-secret" not in repr(secret)
    assert repr(secret) == "<SecretBytes len=10>"


def test_buffer_protocol_is_writable_and_zero_copy() -> None:
    secret = SecretBytes(4)
    assert bytes(secret) == b"\x00" * 4
    memoryview(secret)[:] = b"abcd"
    assert bytes(secret) == b"abcd"
    assert memoryview(secret).readonly is False


def test_constant_time_equality() -> None:
    assert SecretBytes(b"abc") == b"abc"
    assert SecretBytes(b"abc") == bytearray(b"abc")
    assert SecretBytes(b"abc") != b"abd"
    assert SecretBytes(b"abc") != b"abcd"
    assert SecretBytes(b"abc") != "abc"


def test_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(SecretBytes(b"x"))


def test_negative_length_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        SecretBytes(-1)


def test_a_secret_copies_into_a_slice_of_another_buffer() -> None:
    """Slice assignment reads the source's strides (a NULL one crashed the interpreter)."""
    target = bytearray(6)
    memoryview(target)[1:5] = SecretBytes(b"abcd")
    assert target == bytearray(b"\x00abcd\x00")
    with memoryview(SecretBytes(b"xyz")) as view:
        assert view.strides == (1,) and view.c_contiguous
