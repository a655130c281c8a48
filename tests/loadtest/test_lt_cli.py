"""The command line end to end: files, table, compare, sweep, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from lt_support import FakeTarget

from loadtest.cli import main
from loadtest.launcher import free_port

FAST = ["--rps", "100", "--num-requests", "20", "--warmup-requests", "5", "--input-len", "16",
        "--output-len", "4", "--no-progress"]


def test_run_writes_results_plots_and_table(threaded_fake: FakeTarget, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["--url", threaded_fake.url, *FAST, "--mix", "interactive=0.2,batch=0.8",
                 "--monitor-interval", "0.05", "--out", str(out)])
    assert code == 0
    files = {p.name for p in out.iterdir()}
    assert {"summary.json", "requests.csv", "timeline.csv", "ttft_over_time.png",
            "latency_cdf.png", "throughput.png", "resources.png"} <= files
    printed = capsys.readouterr().out
    assert "interactive" in printed and "batch" in printed and "TTFT" in printed
    timeline = (out / "timeline.csv").read_text().splitlines()
    assert "gateway_queue_depth" in timeline[0] and "loadtest_cpu_percent" in timeline[0]


def test_dead_server_is_one_line_not_a_traceback(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", f"http://127.0.0.1:{free_port()}", *FAST, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("loadtest: error: cannot reach http://127.0.0.1:")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags", [["--mix", "a=0"], ["--input-len", "0"],
                                   ["--dataset", "/nonexistent.jsonl"],
                                   ["--rps", "inf", "--duration", "5"]])
def test_bad_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                flags: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["--url", url, "--no-progress", "--out", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("loadtest: error:") and "Traceback" not in err


def test_compare_two_targets(threaded_fake: FakeTarget, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    port = threaded_fake.url.rsplit(":", 1)[1]
    urls = [threaded_fake.url, f"http://localhost:{port}"]
    code = main(["compare", "--url", urls[0], "--url", urls[1], "--label", "gateway",
                 "--label", "vllm", *FAST, "--out", str(tmp_path)])
    assert code == 0
    document = orjson.loads((tmp_path / "compare.json").read_bytes())
    assert set(document) == {"gateway", "vllm"}
    assert (tmp_path / "compare_latency_cdf.png").exists()
    assert (tmp_path / "gateway" / "summary.json").exists()
    assert "side by side" in capsys.readouterr().out
    # the same seeded workload: identical request bodies went to both
    seen = [b for b in threaded_fake.behaviour.seen if b["max_tokens"] != 1]
    def prompts(bodies: list[dict[str, object]]) -> list[str]:
        return sorted(str(b["prompt"]) for b in bodies)  # close arrivals may swap order
    assert prompts(seen[: len(seen) // 2]) == prompts(seen[len(seen) // 2:])


def test_sweep_finds_the_knee(threaded_fake: FakeTarget, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", threaded_fake.url, *FAST, "--sweep-rps", "50,100", "--no-plots",
                 "--out", str(tmp_path)])
    assert code == 0
    document = orjson.loads((tmp_path / "sweep.json").read_bytes())
    assert [p["rps"] for p in document["points"]] == [50, 100]
    assert document["knee_rps"] == 100  # the fake meets its SLOs at both rates
    assert (tmp_path / "rps_50" / "summary.json").exists()
    assert "knee" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "loadtest", "--url",
                           f"http://127.0.0.1:{free_port()}", *FAST, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3 and "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr
