"""The `deploy` stage: one bundle per fitting Zynq hwgen project, deployed to the emulated board (default)
or a real board's agent, golden set checked and benchmarked.

Reads hwgen's projects (hwgen/index.json when present, else its report.json), quant's golden.npz,
and notes the sim stage's report when that stage ran (the bundle's cycle report comes from the same
simulator, asked directly, so deploy does not need the sim stage). Writes deploy/<board>/<backend>/ (the bundle),
deploy/<board>/<backend>.result.json (golden check + benchmark), report.json and report.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from potatura.artifacts import read_json, write_json, write_text
from potatura.errors import ConfigError, DataError
from potatura.hwgen.index import hwgen_projects
from potatura.flow import Stage, StageContext


def deployable(projects: list[dict]) -> tuple[list[dict], list[str]]:
    """(projects a bundle can be written for, "<board>/<backend>: reason" for each one skipped)."""
    from potatura.boards.catalog import get_board
    from potatura.deploy.writer import bundle_protocol

    chosen, skipped = [], []
    for p in projects:
        if not p["fits"]:
            skipped.append(f"{p['board']}/{p['backend']}: does not fit")
        elif not get_board(p["board"]).is_zynq:
            skipped.append(f"{p['board']}/{p['backend']}: XRT card (the PYNQ bundle targets Zynq boards)")
        else:
            protocol, reason = bundle_protocol(p["path"])
            if protocol is None:
                skipped.append(f"{p['board']}/{p['backend']}: {reason}")
            else:
                chosen.append(p)
    return chosen, skipped


def run_on_agent(client, bundle_dir: Path, cfg) -> dict:
    """Deploy, golden check (raises OutputMismatchError), benchmark; the result record."""
    info = client.deploy(bundle_dir, timeout_s=cfg.timeout_s)
    golden = client.golden_check(bundle_dir, timeout_s=cfg.timeout_s)
    bench = client.benchmark(cfg.batch_sizes, cfg.iterations, cfg.warmup, timeout_s=cfg.timeout_s)
    return {"agent": {k: info[k] for k in ("device", "potatura_version", "python", "numpy")},
            "golden": golden, "benchmark": bench}


def run_deploy(cfg, projects: list[dict], golden_path: Path, out_dir: Path, log=None, model_name=None) -> dict:
    from potatura.deploy.writer import write_bundle

    out_dir = Path(out_dir)
    chosen, skipped = deployable(projects)
    if not projects:
        raise DataError("deploy: the hwgen stage wrote no project")
    if log and not chosen:
        log.warning("deploy: nothing to deploy (%s)", "; ".join(skipped))
    client = stop = None
    if cfg.target == "board":
        if not cfg.url:
            raise ConfigError("deploy.url: the agent's URL is needed with deploy.target: board")
        token = os.environ.get(cfg.token_env, "")
        if not token:
            raise ConfigError(f"deploy.token_env: ${cfg.token_env} is empty (the agent's token)")
        from potatura.deploy.client import BoardClient

        client = BoardClient(cfg.url, token, cfg.timeout_s)
    results, outputs = [], {}
    try:
        for p in chosen:
            where = out_dir / p["board"] / p["backend"]
            manifest = write_bundle(p["path"], golden_path, where, samples=cfg.golden_samples,
                                    tolerance_codes=cfg.tolerance_codes, model_name=model_name)
            outputs[f"{p['board']}.{p['backend']}"] = where
            record = {"board": p["board"], "backend": p["backend"], "bundle": str(where.relative_to(out_dir)),
                      "bitstream_placeholder": manifest["bitstream"]["placeholder"], "target": cfg.target,
                      "clock_mhz": manifest["clock_mhz"], "sim_latency_cycles": manifest["timing"]["latency_cycles"],
                      "golden_provenance": manifest["golden"]}
            if cfg.target != "bundle-only":
                if cfg.target == "emulated":
                    from potatura.deploy.client import BoardClient
                    from potatura.deploy.emulated import start_emulated_agent

                    url, token, stop = start_emulated_agent()
                    client = BoardClient(url, token, cfg.timeout_s)
                try:
                    record.update(run_on_agent(client, where, cfg))
                finally:
                    if cfg.target == "emulated" and stop is not None:
                        stop()
                        stop = None
                result_path = write_json(out_dir / p["board"] / f"{p['backend']}.result.json", record)
                outputs[f"{p['board']}.{p['backend']}.result"] = result_path
                if log:
                    log.info("deploy %s", _line(record))
            results.append(record)
    finally:
        if stop is not None:
            stop()
    report = {"target": cfg.target, "skipped": skipped, "results": results}
    outputs["report"] = write_json(out_dir / "report.json", report)
    outputs["summary"] = write_text(out_dir / "report.md", _markdown(report))
    return outputs


def _line(r: dict) -> str:
    head = f"{r['board']}/{r['backend']}"
    if "golden" not in r:
        placeholder = " (bitstream placeholder: not built)" if r["bitstream_placeholder"] else ""
        return f"{head}: bundle written{placeholder}"
    g, bench = r["golden"], r["benchmark"]
    row1 = next((row for row in bench["rows"] if row["batch"] == 1), bench["rows"][0])
    where = "emulated board" if r["target"] == "emulated" else "board"
    hw_s = row1["hardware_s"]["p50"]
    cycles = row1.get("hardware_cycles")
    cyc = f", {cycles[0]:,} simulated cycles at {r['clock_mhz']:g} MHz" if cycles else ""
    return (f"{head}: golden {g['exact']}/{g['samples']} bit-exact on the {where}; hardware-only latency "
            f"{hw_s * 1e6:.2f} us (batch {row1['batch']}, {bench['hardware_source']}{cyc}); end-to-end "
            f"{row1['end_to_end_s']['p50'] * 1e3:.2f} ms ({end_to_end_kind(bench)})")


def end_to_end_kind(bench: dict) -> str:
    """The label of an agent's end-to-end time: measured on a real board; on the emulated board the
    wall clock times potatura's simulator behind the agent, not a board, so it is emulated (as bench
    labels it)."""
    if bench.get("hardware_source") == "measured" and bench.get("device") != "emulated":
        return "measured"
    return "emulated: wall clock of the emulated board on this host"


def _markdown(report: dict) -> str:
    lines = ["# deploy report", "", f"target: {report['target']}", ""]
    for r in report["results"]:
        lines.append(f"- {_line(r)}")
        bench = r.get("benchmark")
        if bench:
            lines += ["", "| batch | hardware p50 (s) | hardware p99 (s) | end-to-end p50 (s) | end-to-end p99 (s) |"
                      " throughput hw (/s) |", "|---:|---:|---:|---:|---:|---:|"]
            for row in bench["rows"]:
                lines.append(f"| {row['batch']} | {row['hardware_s']['p50']:.3e} | {row['hardware_s']['p99']:.3e} | "
                             f"{row['end_to_end_s']['p50']:.3e} | {row['end_to_end_s']['p99']:.3e} | "
                             f"{row['hardware_throughput_per_s'] or 0:,.0f} |")
            lines += ["", f"hardware: {bench['hardware_source']}; end-to-end: measured. {bench['note']}", ""]
    for s in report["skipped"]:
        lines.append(f"- skipped {s}")
    return "\n".join(lines) + "\n"


def run(ctx: StageContext) -> dict:
    hwgen_dir = ctx.run_dir / "hwgen"
    projects = hwgen_projects(hwgen_dir)
    if (ctx.run_dir / "sim").is_dir():
        ctx.log.info("deploy: the sim stage's report is in %s", ctx.run_dir / "sim")
    return run_deploy(ctx.config.deploy, projects, ctx.input("quant", "golden"), ctx.out_dir, ctx.log,
                      model_name=getattr(ctx.config, "name", None))


def headline(stage_dir: Path) -> Optional[str]:
    path = stage_dir / "report.json"
    if not path.is_file():
        return None
    report = read_json(path)
    lines = [_line(r) for r in report["results"]]
    if not lines:
        return "nothing deployed: " + "; ".join(f"skipped {s}" for s in report["skipped"])
    return "; ".join(lines)


STAGE = Stage(
    name="deploy",
    run=run,
    config_sections=("deploy",),
    needs=("quant", "hwgen"),  # sim is optional: the bundle asks the simulator itself (one timing model)
    description="PYNQ bundles per board, deployed to the emulated board (or a board's agent), golden set checked "
                "bit-exact, benchmarked",
    headline=headline,
)
