"""`potatura hwgen`: the hwgen stage of a flow, or accelerator projects for any QONNX file."""

from __future__ import annotations

from pathlib import Path

import typer


def _print_report(console, report_path: Path) -> None:
    from potatura.artifacts import read_json

    report = read_json(report_path)
    for p in report["projects"]:
        t = p["totals_estimated"]
        csim = p["csim"]
        exact = (f"csim {csim['exact_matches']}/{csim['samples']} bit-exact, max |diff| {csim['max_abs_difference']:g} "
                 "(simulated)") if csim else "csim not run"
        console.print(f"hwgen {p['board']}/{p['backend']}: {p['io_type']}, RF {p['reuse_factors']}, "
                      f"DSP {t['dsp']:,} BRAM18 {t['bram18']:,} LUT {t['lut']:,} ({p['figures']}), "
                      f"interval {p['interval_cycles']:,} cycles ({p['cycles'].split(' ')[0]}); {exact}")
        console.print(f"  build: {p['build']['message']}")
    for f in report.get("failed", []):
        console.print(f"hwgen {f['board']}/{f['backend']}: {f['status']}: {f['error']}")
    console.print(f"hwgen: report in {report_path.parent / 'report.md'}")


def register(app: typer.Typer) -> None:
    @app.command("hwgen")
    def hwgen(
        flow: Path | None = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: list[str] | None = typer.Option(None, "--set", "-s", help="override a flow field, e.g. "
                                                 "--set hwgen.max_utilization=0.6 (repeatable)"),
        boards: list[str] | None = typer.Option(None, "--board", "-b", help="board (repeatable); default: "
                                                   "hwgen.boards of the flow"),
        build: bool = typer.Option(False, "--build", help="run HLS synthesis and the bitstream/xclbin build when "
                                   "Vivado/Vitis is on PATH, and read the reports back"),
        qonnx: Path | None = typer.Option(None, "--qonnx", help="generate for this QONNX file instead of the "
                                             "flow's quant output"),
        golden: Path | None = typer.Option(None, "--golden", help="with --qonnx: golden.npz (x inputs) for the "
                                              "csim check; without it csim is skipped"),
        out: Path | None = typer.Option(None, "--out", help="with --qonnx: output folder (default "
                                           "<run dir>/hwgen-<file name>)"),
    ) -> None:
        """hls4ml accelerator projects per board, fitted to the board and checked bit-exact in C simulation.

        Examples:

        potatura hwgen flows/demo.yaml --board pynq-z2 --board zcu104

        potatura hwgen --qonnx runs/demo/quant/model.qonnx.onnx --golden runs/demo/quant/golden.npz --out /tmp/hw

        potatura hwgen flows/demo.yaml --build    # needs vivado_hls and vivado on PATH
        """
        from potatura.cli_common import _load, _run, console

        overrides = list(sets or [])
        if build:
            overrides.append("hwgen.build=true")
        if boards:
            overrides.append("hwgen.boards=[" + ",".join(boards) + "]")
        cfg = _load(flow, overrides)
        if qonnx is None:
            given = [flag for flag, value in (("--out", out), ("--golden", golden),) if value is not None]
            if given:
                from potatura.errors import ConfigError

                raise ConfigError(f"{', '.join(given)}: only used with --qonnx")
            _run(cfg, only=["hwgen"], force=True)  # prints the stage's headline
            return
        import logging

        from potatura.hwgen.stage import run_hwgen
        from potatura.progress import Progress

        hw = cfg.hwgen if golden is not None else cfg.hwgen.model_copy(update={"csim": False})
        out_dir = out or cfg.run_dir() / f"hwgen-{qonnx.name.split('.')[0]}"
        quant_json = qonnx.with_name("quant.json")
        with Progress(console=console, enabled=console.is_terminal) as progress:
            outputs = run_hwgen(hw, qonnx, golden, out_dir, quant_json if quant_json.is_file() else None,
                                logging.getLogger("potatura.hwgen"), progress)
        _print_report(console, outputs["report"])
