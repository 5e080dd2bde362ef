"""cxrl.infra.retry: transient reward failures are retried a bounded number of times; others raise at once."""

from __future__ import annotations

import grpc
import pytest

from cxrl.infra.retry import call_with_retries, is_transient


class _Rpc(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


class _ServiceError(RuntimeError):  # like cxrl.client.RewardServiceError: the code is a value
    def __init__(self, code):
        super().__init__(code.name)
        self.code = code


def test_classification():
    assert is_transient(_Rpc(grpc.StatusCode.UNAVAILABLE))
    assert is_transient(_Rpc(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert is_transient(_ServiceError(grpc.StatusCode.INTERNAL))
    assert not is_transient(_Rpc(grpc.StatusCode.INVALID_ARGUMENT))
    assert not is_transient(_ServiceError(grpc.StatusCode.UNAUTHENTICATED))
    assert is_transient(ConnectionResetError("reset"))
    assert is_transient(TimeoutError())
    assert not is_transient(ValueError("bad images"))


def test_retries_then_succeeds_with_backoff():
    calls, sleeps = [], []

    def fn():
        calls.append(1)
        if len(calls) < 3:
            raise _Rpc(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert call_with_retries(fn, retries=3, backoff_s=0.5, sleep=sleeps.append) == ("ok", 2)
    assert sleeps == [0.5, 1.0]


def test_gives_up_after_the_bound():
    calls = []

    def fn():
        calls.append(1)
        raise _Rpc(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.RpcError):
        call_with_retries(fn, retries=2, backoff_s=0.0, sleep=lambda s: None)
    assert len(calls) == 3


def test_permanent_errors_raise_at_once():
    calls = []

    def fn():
        calls.append(1)
        raise ValueError("images: expected shape [B, 1, H, W]")

    with pytest.raises(ValueError, match="expected shape"):
        call_with_retries(fn, retries=5, backoff_s=0.0, sleep=lambda s: None)
    assert len(calls) == 1


def test_custom_transient_rule_jitter_and_retry_hook():
    failures = [_Rpc(grpc.StatusCode.INTERNAL), _Rpc(grpc.StatusCode.UNAVAILABLE)]
    seen, sleeps = [], []

    def fn():
        if failures:
            raise failures.pop(0)
        return 7

    only_unavailable = lambda exc: exc.code() == grpc.StatusCode.UNAVAILABLE  # noqa: E731
    with pytest.raises(grpc.RpcError):  # INTERNAL is transient by default, not by this rule
        call_with_retries(fn, 3, 1.0, sleep=sleeps.append, transient=only_unavailable)
    assert sleeps == []
    out = call_with_retries(
        fn, 3, 1.0, sleep=sleeps.append, transient=only_unavailable, jitter=0.25, on_retry=seen.append
    )
    assert out == (7, 1) and [e.code() for e in seen] == [grpc.StatusCode.UNAVAILABLE]
    assert 1.0 <= sleeps[0] < 1.25  # backoff stretched by at most the jitter share
