"""The benchmark: its summary, its verdicts on the targets of issue 3 and a whole run (benchmarks/)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
from benchmarks import markdown, report  # noqa: E402

ENGINES = ["sepconv", "torch-nchw", "tensorflow"]


def _row(layer, floor_ms, **ms):
    return {"mode": "infer-b1", "layer": layer, "floor_ms": floor_ms,
            "ms": {name.replace("_", "-"): value for name, value in ms.items()}}


def _document(results):
    return {"engines": ENGINES, "results": results,
            "summary": report.summarise(results, ENGINES)}


def test_summary_geomeans_against_peers_and_at_the_floor():
    results = [_row("a", 1.0, sepconv=2.0, torch_nchw=4.0, tensorflow=1.0),
               _row("b", 2.0, sepconv=2.0, torch_nchw=8.0, tensorflow=4.0)]
    entry = report.summarise(results, ENGINES)["infer-b1"]
    assert entry["geomean_speedup"] == pytest.approx({"torch-nchw": 8 ** 0.5, "tensorflow": 1.0})
    assert entry["geomean_speedup_at_floor"] == pytest.approx({"torch-nchw": 4.0, "tensorflow": 2 ** 0.5})
    assert entry["layers_where_a_peer_is_faster"] == ["a"]
    assert entry["ratio_to_floor"] == pytest.approx({"a": 2.0, "b": 1.0})


def test_a_missing_peer_time_is_left_out_of_its_geomeans():
    results = [_row("a", 1.0, sepconv=1.0, torch_nchw=3.0, tensorflow=None),
               _row("b", 1.0, sepconv=1.0, torch_nchw=3.0, tensorflow=2.0)]
    entry = report.summarise(results, ENGINES)["infer-b1"]
    assert entry["geomean_speedup"]["tensorflow"] == pytest.approx(2.0)
    assert entry["geomean_speedup_at_floor"]["tensorflow"] == pytest.approx(2.0)


@pytest.mark.parametrize("sepconv_ms, naive_ms, verdict", [
    (1.0, 2.5, "met (2.50x with sepconv at the floor on every layer)"),
    (1.5, 2.5, "NOT met (2.50x with sepconv at the floor on every layer)"),
    (1.5, 1.8, "NOT met (1.80x with sepconv at the floor on every layer)"),
])
def test_ratio_verdicts_say_what_the_floor_allows(sepconv_ms, naive_ms, verdict):
    document = _document([_row("a", 1.0, sepconv=sepconv_ms, torch_nchw=naive_ms, tensorflow=9.0)])
    lines = markdown.targets(document).splitlines()
    naive = [line for line in lines if "vs torch-nchw" in line]
    assert naive == [f"- infer-b1: geomean speed-up vs torch-nchw {naive_ms / sepconv_ms:.2f}x "
                     f"(target 2.0x): {verdict}"]


def test_rendering_a_saved_file_recomputes_its_summary(tmp_path, capsys):
    document = _document([_row("a", 1.0, sepconv=1.5, torch_nchw=1.8, tensorflow=9.0)])
    del document["summary"]["infer-b1"]["geomean_speedup_at_floor"]  # as written before it existed
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(document))
    markdown.main([str(path)])
    assert "NOT met (1.80x with sepconv at the floor" in capsys.readouterr().out


def test_the_gemm_peak_is_the_best_over_the_runs_pointwise_gemms(monkeypatch):
    from benchmarks import roofline, suite
    layers, modes = suite.select(suite.LAYERS, ["mnv1-7x1024-1024"], "layers"), list(suite.MODES)
    shapes = suite.peak_gemm_shapes(layers, modes)
    assert shapes == [(49, 1024, 1024), (784, 1024, 1024), (1024, 1024, 1024)]
    assert roofline._mm_flops(64, 32, 16, repeats=3) > 0
    rates = {(49, 1024, 1024): 5.0, (784, 1024, 1024): 9.0, (1024, 1024, 1024): 7.0}
    monkeypatch.setattr(roofline, "_mm_flops", lambda m, k, n, repeats: rates[(m, k, n)])
    assert roofline.gemm_peak_flops(shapes) == 9.0


def test_a_run_writes_its_report_and_removes_its_scratch_files(tmp_path):
    """The memory pass saves each layer's arrays to a scratch folder, which must not outlive the run."""
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(scratch_parent)}
    subprocess.run([sys.executable, "-m", "sepconv", "bench", "--layers", "mnv1-7x1024-1024",
                    "--modes", "train-b16", "--engines", "torch-nchw", "--rounds", "1",
                    "--threads", "1", "--out", str(out)],
                   env=env, check=True, capture_output=True, cwd=pathlib.Path(__file__).parents[1])
    (row,) = json.loads((out / "bench.json").read_text())["results"]
    assert set(row["peak_mib"]) == {"sepconv", "torch-nchw"}
    assert list(scratch_parent.iterdir()) == []


@pytest.mark.parametrize("argv, env, message", [
    (["--out", "{file}"], {}, "--out: cannot create directory '{file}': File exists"),
    (["--tf-python", "/no/such/python"], {}, "--tf-python '/no/such/python' is not an executable file"),
    ([], {"SEPCONV_TF_PYTHON": "/no/such/python"},
     "$SEPCONV_TF_PYTHON '/no/such/python' is not an executable file"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, argv, env, message):
    from benchmarks import runner

    file = tmp_path / "a-file"
    file.write_text("")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runner, "measure", lambda *args: pytest.fail("the run must not start"))
    argv = [arg.format(file=file) for arg in argv] + (["--out", str(tmp_path / "out")] if "--out" not in argv else [])
    with pytest.raises(SystemExit) as exit_info:
        runner.run(argv)
    assert exit_info.value.code == 2
    assert message.format(file=file) in capsys.readouterr().err
