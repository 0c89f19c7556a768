"""Boards managed by labgrid: reach the agent over the target's SSH, power-cycle after a detected hang.

For labs that already describe their boards in a labgrid environment file (labgrid is not a
dependency of potatura: `pip install labgrid` on the lab host). The board tests use it when pytest
runs with labgrid's plugin (`--lg-env lab.yaml`):

    targets:
      main:
        resources:
          NetworkService: {address: pynq-z2.lab, username: xilinx}
          # and whatever the lab's power switch is, e.g.
          NetworkPowerPort: {model: gude, host: pdu.lab, index: 3}
        drivers:
          SSHDriver: {}
          NetworkPowerDriver: {}
    options:
      potatura_agent_port: "8765"
      potatura_agent_dir: /home/xilinx/potatura-bundle

The agent must run on the board as root with the token in /root/.potatura-token (README, "Deploying
to a board"); `LabgridBoard.start_agent` starts it from the copied bundle after a power cycle.
Untested here (no labgrid lab on this machine): it uses labgrid's documented driver API only
(SSHDriver.run / put / forward_local_port, PowerProtocol.cycle, Target.activate/deactivate).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from potatura.deploy.errors import DeployError, LinkError


class LabgridBoard:
    """One labgrid target that runs the potatura agent."""

    def __init__(self, target, agent_port: int = 8765, agent_dir: str = "/home/xilinx/potatura-bundle",
                 token_file: str = "/root/.potatura-token"):
        self.target, self.agent_port, self.agent_dir, self.token_file = target, int(agent_port), agent_dir, token_file
        self.ssh = target.get_driver("SSHDriver")
        try:
            self.power = target.get_driver("PowerProtocol", activate=False)
        except Exception:  # noqa: BLE001  (labgrid raises NoDriverFoundError: a lab without a power switch)
            self.power = None

    @classmethod
    def from_env(cls, env, target_name: str = "main") -> "LabgridBoard":
        """From a labgrid Environment (the `env` fixture of labgrid's pytest plugin)."""
        options = {}
        get = getattr(env.config, "get_option", None)
        for key in ("potatura_agent_port", "potatura_agent_dir"):
            try:
                options[key] = get(key) if get else None
            except Exception:  # noqa: BLE001  (option not set: the default applies)
                options[key] = None
        return cls(env.get_target(target_name), int(options["potatura_agent_port"] or 8765),
                   options["potatura_agent_dir"] or "/home/xilinx/potatura-bundle")

    def token(self) -> str:
        stdout, stderr, code = self.ssh.run(f"sudo cat {self.token_file}")
        if code != 0 or not stdout:
            raise DeployError(f"labgrid: cannot read the agent token {self.token_file} on the board: {' '.join(stderr)}")
        return stdout[0].strip()

    @contextlib.contextmanager
    def agent_url(self) -> Iterator[str]:
        """http://127.0.0.1:<port> forwarded over the target's SSH connection to the agent's 127.0.0.1 port."""
        with self.ssh.forward_local_port(self.agent_port) as local_port:
            yield f"http://127.0.0.1:{local_port}"

    def install_bundle(self, bundle_dir) -> None:
        """Copy a bundle (with its agent package) to agent_dir on the board."""
        self.ssh.run(f"rm -rf {self.agent_dir}")
        self.ssh.put(str(Path(bundle_dir)), self.agent_dir)

    def start_agent(self) -> None:
        cmd = (f"cd {self.agent_dir} && sudo -b env PYTHONPATH=agent sh -c '. /etc/profile.d/pynq_venv.sh 2>/dev/null; "
               f"python3 -m potatura.deploy.agent serve --port {self.agent_port} --token-file {self.token_file} "
               f"> /tmp/potatura-agent.log 2>&1'")
        _, stderr, code = self.ssh.run(cmd)
        if code != 0:
            raise DeployError(f"labgrid: starting the agent failed: {' '.join(stderr)}")

    def power_cycle(self, boot_timeout_s: float = 300.0) -> None:
        """Power-cycle the board through its power driver, wait for SSH, start the agent again."""
        if self.power is None:
            raise DeployError("labgrid: the target has no power driver (PowerProtocol); cannot recover a hung board")
        self.target.deactivate(self.ssh)
        self.target.activate(self.power)
        self.power.cycle()
        end = time.monotonic() + boot_timeout_s
        while True:
            try:
                self.target.activate(self.ssh)
                break
            except Exception as exc:  # noqa: BLE001  (ssh refuses while the board boots)
                if time.monotonic() > end:
                    raise LinkError(f"labgrid: the board did not come back within {boot_timeout_s:g} s: {exc}") from None
                time.sleep(5)
        self.start_agent()

