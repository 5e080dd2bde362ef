"""One logging setup: one format, level from the environment, survives stderr being swapped."""

import io
import logging
import sys

from cxrl.log import _StderrHandler, setup_logging


def ours() -> int:
    """Our handlers on the root logger (pytest adds its own capture handlers beside them)."""
    return sum(isinstance(h, _StderrHandler) for h in logging.getLogger().handlers)


def test_logs_follow_the_current_stderr(monkeypatch):
    setup_logging("INFO")
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    logging.getLogger("cxrl.test").info("hello %d", 3)
    line = buf.getvalue().strip()
    assert line.endswith("INFO cxrl.test: hello 3")
    assert ours() == 1
    setup_logging("WARNING")  # configuring twice keeps one handler and changes the level
    assert ours() == 1
    logging.getLogger("cxrl.test").info("hidden")
    assert "hidden" not in buf.getvalue()
    setup_logging("INFO")
