"""Issue 9 item 8 / issue 10 item 4: the root command and the flow-file schema import no stage,
torch, brevitas or hls4ml (times are measured by scripts/bench_cli.py, not asserted here)."""

import subprocess
import sys

HEAVY = ("torch", "brevitas", "hls4ml", "qonnx", "onnx", "onnxruntime", "sklearn")


def _imported_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('MODULES', ' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_config_imports_no_heavy_package():
    mods = _imported_after("import potatura.config")
    assert not {m for m in mods if m.split(".")[0] in HEAVY}


def test_help_and_usage_errors_import_no_stage():
    for argv in (["--help"], ["bogus-command"], ["run", "--help"], ["run", "/nonexistent/flow.yaml"]):
        code = (f"import potatura.cli as c\ntry:\n    c.main({argv!r})\nexcept SystemExit:\n    pass")
        mods = _imported_after(code)
        heavy = {m.split(".")[0] for m in mods if m.split(".")[0] in HEAVY}
        stages = {m for m in mods if m.startswith("potatura.") and m.endswith((".stage", ".pipeline"))}
        assert not heavy and not stages, (argv, heavy, stages)


def test_stage_command_list_matches_the_flow_order():
    from potatura.cli import STAGE_COMMANDS
    from potatura.config import STAGE_ORDER

    assert tuple(STAGE_COMMANDS) == STAGE_ORDER


def test_stage_help_loads_only_that_stage():
    mods = _imported_after("import potatura.cli as c\ntry:\n    c.main(['train', '--help'])\nexcept SystemExit:\n    pass")
    assert "potatura.train.cli" in mods
    assert not {m for m in mods if m.startswith(("potatura.quant", "potatura.hwgen.stage", "potatura.simplify.cli"))}
