"""Typed deploy errors, shared by the board side (driver, agent) and the host (client).

Board side: stdlib only. Every error has a stable `kind` (its class name) that the agent sends in
its JSON error body and the client turns back into the same class, so a test or a user sees
`DmaSlaveError` whether the DMA ran in this process or on a board across the network.
"""

from __future__ import annotations

from potatura.errors import PotaturaError


class DeployError(PotaturaError):
    """Something on the way to (or on) the board failed; the message says what and where."""

    http_status = 500

    @property
    def kind(self) -> str:
        return type(self).__name__


class DeadlineError(DeployError):
    """A wait passed its deadline (seconds): the accelerator or the DMA did not finish."""

    http_status = 504


class AcceleratorHangError(DeadlineError):
    """The DMA transfers were started but the accelerator produced no (complete) result in time."""


class DmaError(DeployError):
    """The AXI DMA reported an error in DMASR (the channel halts until reset)."""

    http_status = 502
    status_bit = 0


class DmaInternalError(DmaError):
    """DMASR bit 4 (0x10) DMAIntErr: e.g. a stream packet longer than the programmed LENGTH."""

    status_bit = 0x10


class DmaSlaveError(DmaError):
    """DMASR bit 5 (0x20) DMASlvErr: the memory slave answered a DMA access with an error."""

    status_bit = 0x20


class DmaDecodeError(DmaError):
    """DMASR bit 6 (0x40) DMADecErr: the DMA address decodes to no slave (bad physical address)."""

    status_bit = 0x40


class WireFormatError(DeployError):
    """A word read back from the accelerator is no value of the output type (not a whole code or out of range)."""

    http_status = 502


class InputError(DeployError):
    """Inputs that do not fit the accelerator: wrong shape, not integers, codes outside the input type."""

    http_status = 400


class OutputMismatchError(DeployError):
    """Outputs differ from the expected integer codes by more than the manifest's tolerance."""

    http_status = 409


class BundleError(DeployError):
    """A bundle is malformed, unsafe (path escape, symlink, too large) or incomplete."""

    http_status = 400


class BundleIntegrityError(BundleError):
    """A bundle file's sha256 differs from the manifest's: corrupted or altered."""


class BundleTooLargeError(BundleError):
    """An upload exceeds the agent's size limit (bytes)."""

    http_status = 413


class VersionMismatchError(DeployError):
    """The bundle was written for another bundle format / driver ABI than this agent speaks."""

    http_status = 409


class NotLoadedError(DeployError):
    """A run or benchmark came before a bundle was loaded."""

    http_status = 409


class BusyError(DeployError):
    """The accelerator lock was not free before the request's deadline."""

    http_status = 503


class AuthError(DeployError):
    """Missing or wrong agent token (HTTP 401)."""

    http_status = 401


class LinkError(DeployError):
    """The agent could not be reached or did not answer in time (host side)."""

    http_status = 599


class LinkTimeoutError(LinkError, DeadlineError):
    """The agent did not answer within the client's deadline (slow or dead link)."""


class AgentError(DeployError):
    """An error the agent reported that has no class of its own here."""


ERRORS = {cls.__name__: cls for cls in (
    DeployError, DeadlineError, AcceleratorHangError, DmaError, DmaInternalError, DmaSlaveError, DmaDecodeError,
    WireFormatError, InputError, OutputMismatchError, BundleError, BundleIntegrityError, BundleTooLargeError,
    VersionMismatchError, NotLoadedError, BusyError, AuthError, LinkError, LinkTimeoutError, AgentError)}

DMA_ERRORS = (DmaInternalError, DmaSlaveError, DmaDecodeError)  # in DMASR bit order


def error_from_kind(kind: str, message: str) -> DeployError:
    """The typed error an agent named (AgentError for a kind this side does not know)."""
    return ERRORS.get(kind, AgentError)(message)
