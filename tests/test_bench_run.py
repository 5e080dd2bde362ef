"""bench.run: the headline table of key ratios, the per-benchmark tables, and missing output."""

import json

from bench.run import HEADLINE, flatten, headline, lookup, shown, summarise


def test_summary_tables(tmp_path):
    (tmp_path / "bench_labeler.json").write_text(
        json.dumps({"reports_per_s": 3190.46, "cpu": {"threads": 1}, "ok": True})
    )
    text = summarise(tmp_path, {"bench_labeler": 0, "bench_world": 1}, ["run on 2 CPUs"])
    details = text.split("## bench_labeler (exit 0)")[1].split("## bench_world")[0]
    assert "| reports_per_s | 3190 |" in details
    assert "| cpu.threads | 1 |" in details
    assert "ok" not in details  # booleans are not numbers
    assert "## bench_world (exit 1)\n\nno JSON written" in text
    assert text.index("run on 2 CPUs") < text.index("| measure | value | what |") < text.index("## bench_")
    assert flatten({"a": {"b": {"c": 2.5}}, "s": "x"}) == [("a.b.c", 2.5), ("s", "x")]


def test_headline_reads_nested_numbers_and_marks_missing(tmp_path):
    (tmp_path / "bench_services.json").write_text(
        json.dumps(
            {
                "ratio": 0.8634,
                "replica_scaling": 1.4712,
                "memory": {"1_replicas": {"peak_tree_pss_mb": 3620.4}},
            }
        )
    )
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1] for line in headline(tmp_path)[2:]}
    assert len(rows) == len(HEADLINE)  # one row per measure, labels distinct
    assert rows["reward service overhead: gateway over gRPC / in-process"] == "0.863"
    assert rows["replica scaling: throughput 2 replicas / 1 replica"] == "1.47"
    assert rows["services peak memory, 1 replica each (MB PSS)"] == "3620"
    assert rows["anchor cache: warm / cold epoch time, in-process"] == "not measured"  # no bench_trainer.json
    assert shown(1234.56) == "1235" and shown(0.86344) == "0.863" and shown(3) == "3"
    assert lookup({"a": {"b": 2}}, "a.b") == 2 and lookup({"a": 1}, "a.b") is None
