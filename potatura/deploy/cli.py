"""`potatura deploy`: the deploy stage of a flow (emulated board by default), or a HIL check of a board."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override a flow field, e.g. "
                                                 "--set deploy.golden_samples=32 (repeatable)"),
        bundle_only: bool = typer.Option(False, "--bundle-only", help="write the bundles "
                                         "(runs/<name>/deploy/<board>/<backend>/), run nothing"),
        emulated: bool = typer.Option(False, "--emulated", help="deploy to a local agent on the emulated board "
                                      "(the default target)"),
        url: Optional[str] = typer.Option(None, "--url", help="deploy to the agent at this URL (a real board)"),
        token: Optional[str] = typer.Option(None, "--token", help="the agent's token (default: "
                                            "$POTATURA_AGENT_TOKEN)", envvar="POTATURA_AGENT_TOKEN"),
        check: Optional[str] = typer.Option(None, "--check", help="HIL check of the agent at this URL "
                                            "('emulated': a local emulated board): golden, throughput, soak"),
        bundle: Optional[Path] = typer.Option(None, "--bundle", help="with --check: the bundle folder (default: "
                                              "the flow's first bundle)"),
        soak_seconds: float = typer.Option(10.0, "--soak-seconds", help="with --check: soak time budget (s)"),
        junit: Optional[Path] = typer.Option(None, "--junit", help="with --check: write JUnit XML here"),
    ) -> None:
        """PYNQ bundles per board; deploy, golden check and benchmark on the emulated board or a real one.

        Examples:

        potatura deploy flows/demo.yaml                      # emulated board (default)

        potatura deploy flows/demo.yaml --bundle-only        # just the bundles

        potatura deploy flows/demo.yaml --url http://127.0.0.1:8765 --token $TOKEN   # a board (SSH tunnel)

        potatura deploy --check http://127.0.0.1:8765 --bundle runs/demo/deploy/pynq-z2/hls4ml --junit hil.xml
        """
        from potatura.cli import _load, _run, console
        from potatura.errors import ConfigError

        targets = [flag for flag, on in (("--bundle-only", bundle_only), ("--emulated", emulated),
                                          ("--url", url is not None), ("--check", check is not None)) if on]
        if len(targets) > 1:
            raise ConfigError(f"{', '.join(targets)}: choose one")
        if check is None and (bundle is not None or junit is not None):
            raise ConfigError("--bundle and --junit are used with --check")
        overrides = list(sets or [])
        if check is not None:
            cfg = _load(flow, overrides)
            _check(console, cfg, check, token, bundle, soak_seconds, junit)
            return
        if bundle_only:
            overrides.append("deploy.target=bundle-only")
        elif emulated:
            overrides.append("deploy.target=emulated")
        elif url is not None:
            if not token:
                raise ConfigError("--url needs --token or $POTATURA_AGENT_TOKEN")
            os.environ["POTATURA_AGENT_TOKEN"] = token
            overrides += ["deploy.target=board", f"deploy.url={url}", "deploy.token_env=POTATURA_AGENT_TOKEN"]
        cfg = _load(flow, overrides)
        _run(cfg, only=["deploy"], force=True)  # prints the stage's headline


def _check(console, cfg, url: str, token: Optional[str], bundle: Optional[Path], soak_seconds: float,
           junit: Optional[Path]) -> None:
    from potatura.deploy.check import junit_xml, run_check, table
    from potatura.deploy.client import BoardClient
    from potatura.errors import ConfigError, PotaturaError

    if bundle is None:
        deploy_dir = cfg.run_dir() / "deploy"
        found = sorted(p.parent for p in deploy_dir.glob("*/*/manifest.json"))
        if not found:
            raise ConfigError(f"--check: no bundle in {deploy_dir}; run `potatura deploy --bundle-only` or pass --bundle")
        bundle = found[0]
    stop = None
    where = "the emulated board" if url == "emulated" else url  # not the emulated agent's random port
    if url == "emulated":
        from potatura.deploy.emulated import start_emulated_agent

        url, token, stop = start_emulated_agent()
    if not token:
        raise ConfigError("--check needs --token or $POTATURA_AGENT_TOKEN")
    try:
        client = BoardClient(url, token, cfg.deploy.timeout_s)
        steps = run_check(client, bundle, cfg.deploy.batch_sizes, cfg.deploy.iterations, cfg.deploy.warmup,
                          soak_seconds)
    finally:
        if stop is not None:
            stop()
    console.print(table(steps), markup=False, highlight=False)
    if junit is not None:
        junit_xml(steps, junit)
        console.print(f"JUnit XML: {junit}")
    failed = [s for s in steps if not s.passed]
    if failed:
        first = failed[0]
        why = (first.error or first.detail).splitlines()[0]
        if len(failed) == 1:
            raise PotaturaError(f"HIL check of {where}: {first.name} failed: {why}")
        raise PotaturaError(f"HIL check of {where}: {', '.join(s.name for s in failed)} failed; "
                            f"{first.name}: {why}")
