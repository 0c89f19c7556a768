"""The bench stage on a real run directory: latency.json, report.html with every section, the CLI."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from potatura.artifacts import read_json
from potatura.bench.report import collect, load_latency, write_report

SECTIONS = ("summary", "accuracy", "layers", "resources", "latency", "cycles", "training")
CPU_TARGETS = {"torch float", "torch simplified", "torch fake-quant", "onnxruntime float 1t",
               "onnxruntime simplified 1t"}


def test_latency_json_labels_every_figure_and_records_the_protocol(bench_run):
    run_dir, cfg = bench_run
    data = read_json(run_dir / "bench" / "latency.json")
    assert data["format"] == "potatura-bench/1"
    assert data["protocol"]["threads"] == 1 and data["protocol"]["batch_sizes"] == [1, 8]
    names = {r["name"] for r in data["results"]}
    assert CPU_TARGETS <= names
    for r in data["results"]:
        assert r["kind"] in ("measured", "emulated", "simulated")
        if r["device"] != "fpga" or r["kind"] == "simulated":  # the deploy stage chose its own batch sizes
            assert [p["batch"] for p in r["points"]] == [1, 8]
        for p in r["points"]:
            assert 0 < p["min_s"] <= p["p50_s"] <= p["p90_s"] <= p["p99_s"] <= p["max_s"]
            assert 1 <= p["runs"] <= max(20, cfg.deploy.iterations)
        if r["device"] == "cpu":
            assert r["kind"] == "measured"
            assert r["threads"] == (1 if r["name"].endswith("1t") or r["name"].startswith("torch") else r["threads"])
    # the baseline is torch eager on the float model; its own speedup is exactly 1
    assert data["baseline"] == "torch float"
    assert data["speedup_vs_baseline_batch1"]["torch float"] == 1.0
    fastest = min((r for r in data["results"] if r["device"] == "cpu"), key=lambda r: r["points"][0]["p50_s"])
    assert data["fastest_cpu_batch1"]["name"] == fastest["name"]
    # onnxruntime runs what torch runs
    for name, check in data["onnx_exports"].items():
        assert check["relative_difference"] < 1e-5 and check["argmax_agreement"] == 1.0, name
    skipped = {s["name"]: s["reason"] for s in data["skipped"]}
    if not torch.cuda.is_available():
        assert skipped["cuda"].startswith("no GPU")
    assert skipped["fpga board"].startswith("no board agent")  # no board agent here: said, not faked


def test_simulated_and_emulated_figures_come_from_the_simulator_and_the_deploy_stage(bench_run):
    run_dir, _ = bench_run
    latency = load_latency(run_dir)
    by_name = {r.name: r for r in latency["results"]}
    sim = by_name["fpga pynq-z2/hls4ml simulated"]
    sim_report = read_json(run_dir / "sim" / "pynq-z2" / "hls4ml" / "report.json")["cycles"]
    cycles = sim.details["cycles"]
    assert (sim.kind, sim.device, sim.threads) == ("simulated", "fpga", None)
    assert cycles["latency_cycles"] == sim_report["latency_cycles"]
    assert sim.single_stream.p50_s == pytest.approx(cycles["latency_cycles"] / (cycles["clock_mhz"] * 1e6))
    assert sim.single_stream.runs == 1  # computed once, not timed
    assert sim.point(8).p50_s > sim.single_stream.p50_s
    emulated = [r for r in latency["results"] if r.kind == "emulated"]
    assert {r.name for r in emulated} == {"fpga pynq-z2/hls4ml emulated hardware-only",
                                          "fpga pynq-z2/hls4ml emulated end-to-end"}
    deploy = read_json(run_dir / "deploy" / "pynq-z2" / "hls4ml.result.json")["benchmark"]
    hw = by_name["fpga pynq-z2/hls4ml emulated hardware-only"]
    assert hw.single_stream.p50_s == deploy["rows"][0]["hardware_s"]["p50"]
    # the emulated board's hardware time is the simulator's cycles on its virtual clock
    assert hw.single_stream.p50_s == pytest.approx(sim.single_stream.p50_s)
    html = (run_dir / "bench" / "report.html").read_text()
    assert "sim stage: sim/pynq-z2/hls4ml/report.json" in html
    for layer in sim_report["per_layer"]:
        assert f"<td>{layer['name']}</td>" in html
    goal = collect(run_dir)["goal"]
    first = goal[0]
    assert first["check"] == "<= 20 us per image (simulated)" and first["met"] == (sim.single_stream.p50_s <= 20e-6)


def test_report_holds_every_section_with_the_run_numbers(bench_run):
    run_dir, _ = bench_run
    html = (run_dir / "bench" / "report.html").read_text()
    for section in SECTIONS:
        assert f'<h2 id="{section}">' in html, section
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    alts = {alt for alt, _ in images}
    assert {"accuracy per stage", "neurons and parameters per layer", "resource utilization",
            "batch-1 latency per target", "offline throughput per batch size", "training curves"} <= alts
    assert not re.search(r'(src|href)="(?!data:)', html)  # self-contained: nothing loaded from elsewhere
    # the numbers shown are the stages' own
    train = read_json(run_dir / "train" / "summary.json")
    quant = read_json(run_dir / "quant" / "summary.json")
    assert f"{100 * train['test_accuracy']:.2f}%" in html
    assert f"{100 * quant['accuracy']['test']['ptq']:.2f}%" in html
    fit = read_json(run_dir / "hwgen" / "pynq-z2" / "hls4ml" / "fit_report.json")
    assert f"{fit['totals']['lut']:,}" in html and f"{fit['device']['lut']:,}" in html
    data = collect(run_dir)
    layers = {r["layer"]: r for r in data["layers"]}
    simplify = read_json(run_dir / "simplify" / "summary.json")
    for row in simplify["layers"]:
        assert layers[row["layer"]]["parameters_after"] == row["params_after"]
        assert layers[row["layer"]]["neurons_after"] == row["out_after"]
    for r in load_latency(run_dir)["results"]:
        assert r.name in html
    # every target not measured is listed with its reason
    for s in load_latency(run_dir)["skipped"]:
        assert s.reason.replace("'", "&#x27;") in html


def test_report_command_rebuilds_the_report_without_measuring(bench_run, tmp_path):
    from potatura.cli import app

    run_dir, _ = bench_run
    before = (run_dir / "bench" / "latency.json").read_bytes()
    out = tmp_path / "again.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "torch float" in result.output and f"report: {out}" in result.output
    assert (run_dir / "bench" / "latency.json").read_bytes() == before
    html = out.read_text()
    assert all(f'<h2 id="{s}">' in html for s in SECTIONS)


def test_report_of_a_directory_that_is_no_run_is_one_line(tmp_path):
    from potatura.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    assert exc.value.code == 2


def test_report_without_bench_results_says_what_is_missing(bench_run, tmp_path):
    run_dir, _ = bench_run
    out = write_report(run_dir, tmp_path / "r.html", bench_dir=tmp_path / "no-bench")
    html = out.read_text()
    assert "no bench/latency.json" in html
    assert all(f'<h2 id="{s}">' in html for s in SECTIONS)


def test_headline_names_the_fastest_cpu_and_the_report(bench_run):
    from potatura.bench.stage import headline

    run_dir, _ = bench_run
    line = headline(run_dir / "bench")
    data = read_json(run_dir / "bench" / "latency.json")
    assert f"fastest CPU batch 1: {data['fastest_cpu_batch1']['name']}" in line
    assert "(1 thread(s), measured)" in line and str(run_dir / "bench" / "report.html") in line
    assert json.dumps(data)  # plain JSON (no NaN from a missing spread)


def test_bench_command_measures_the_chosen_targets_and_prints_the_table(bench_run, tmp_path):
    import shutil

    from potatura.cli import app
    from potatura.config import dump_config

    run_dir, cfg = bench_run
    shutil.copytree(run_dir, tmp_path / run_dir.name)
    flow = tmp_path / "flow.yaml"
    flow.write_text(dump_config(cfg.model_copy(update={"runs_dir": tmp_path})))
    result = CliRunner().invoke(app, ["bench", str(flow), "--set", "bench.targets=[torch]",
                                      "--set", "bench.batch_sizes=[1]", "--set", "bench.threads=2"])
    assert result.exit_code == 0, result.output
    data = read_json(tmp_path / run_dir.name / "bench" / "latency.json")
    assert [r["name"] for r in data["results"]] == ["torch float", "torch simplified", "torch fake-quant"]
    assert all(r["threads"] == 2 and [p["batch"] for p in r["points"]] == [1] for r in data["results"])
    assert data["protocol"]["threads"] == 2
    assert "latency, batch 1 (threads 2" in result.output and "torch fake-quant" in result.output
    assert "bench: fastest CPU batch 1: torch" in result.output


def test_board_targets_go_through_the_deploy_client_and_keep_the_agents_label(bench_run):
    from potatura.bench.targets import BoardTarget
    from potatura.deploy.emulated import start_emulated_agent

    run_dir, _ = bench_run
    bundle = run_dir / "deploy" / "pynq-z2" / "hls4ml"
    sim = next(r for r in load_latency(run_dir)["results"] if r.kind == "simulated")
    # the emulated board, started by the target itself
    target = BoardTarget("fpga pynq-z2/hls4ml emulated", bundle, "emulated")
    try:
        hw, e2e = target.measure([1, 4], iterations=3, warmup=1)
    finally:
        target.close()
    assert (hw.name, e2e.name) == ("fpga pynq-z2/hls4ml emulated hardware-only", "fpga pynq-z2/hls4ml emulated end-to-end")
    assert (hw.kind, e2e.kind) == ("emulated", "emulated")
    assert [p.batch for p in hw.points] == [1, 4] and hw.single_stream.runs == 3
    assert hw.single_stream.p50_s == pytest.approx(sim.single_stream.p50_s)  # simulator cycles / clock
    # a board agent reached by URL (here an emulated one): deployed through the client, and the
    # agent's own label wins over the "measured" the caller expected
    url, token, stop = start_emulated_agent()
    target = BoardTarget("fpga pynq-z2/hls4ml board", bundle, "measured", url, token)
    try:
        results = target.measure([1], iterations=2, warmup=0)
    finally:
        stop()
    assert {r.kind for r in results} == {"emulated"}
    assert results[0].details["agent"]["device"] == "emulated"
