"""bench.run: the summary lists every number a benchmark wrote, and missing output."""

import json

from bench.run import flatten, summarise


def test_summary_tables(tmp_path):
    (tmp_path / "bench_labeler.json").write_text(
        json.dumps({"reports_per_s": 3190.46, "cpu": {"threads": 1}, "ok": True})
    )
    text = summarise(tmp_path, {"bench_labeler": 0, "bench_world": 1})
    assert "| reports_per_s | 3190 |" in text
    assert "| cpu.threads | 1 |" in text
    assert "ok" not in text.split("## bench_world")[0].split("| measure")[1]  # booleans are not numbers
    assert "## bench_world (exit 1)\n\nno JSON written" in text
    assert flatten({"a": {"b": {"c": 2.5}}, "s": "x"}) == [("a.b.c", 2.5), ("s", "x")]
