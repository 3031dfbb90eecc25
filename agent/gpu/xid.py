"""Critical XID events through an NVML event set, and what each XID asks of a person.

The set is created once per NVML session and drained without blocking (`poll`); a driver
without event sets (NOT_SUPPORTED, or the symbol missing: FUNCTION_NOT_FOUND) is reported
as "not supported", and a failing wait means the GPUs cannot be trusted (as NVIDIA's k8s
device plugin treats it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from agent.gpu.nvml import NvmlSession

Action = Literal["reset", "reboot", "procedure", "restart_app", "ignore", "unknown"]

# NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors), the codes that ask for action.
_ACTIONS: dict[Action, tuple[int, ...]] = {
    "reset": (46, 62, 64, 78, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158),
    "reboot": (79,),
    "procedure": (45, 48, 74),
    "restart_app": (13, 31, 94),
    "ignore": (43, 63, 92),
}
XID_ACTION: dict[int, Action] = {code: a for a, codes in _ACTIONS.items() for code in codes}
FIXES: dict[Action, str] = {
    "reset": "reset the GPU (`nvidia-smi -r -i {index}` with nothing running on it) or reboot",
    "reboot": "the GPU fell off the bus: reboot the box (`sudo reboot`)",
    "procedure": "follow NVIDIA's procedure for XID {xid} (ECC or NVLink); a reboot clears it",
    "restart_app": "the application's fault: restarting vLLM clears it",
    "ignore": "",
    "unknown": "see NVIDIA's XID catalogue for XID {xid}",
}


def action(xid: int) -> Action:
    return XID_ACTION.get(xid, "unknown")


def needs_person(xid: int) -> bool:
    """True when restarting a container cannot heal it: report it with its fix, never loop."""
    return action(xid) in ("reset", "reboot", "procedure")


def fix(xid: int, index: int) -> str:
    return FIXES[action(xid)].format(xid=xid, index=index)


@dataclass(frozen=True)
class XidEvent:
    index: int
    uuid: str | None
    xid: int


class XidWatch:
    """Critical XIDs of every GPU of `session`, registered once NVML is open."""

    def __init__(self, session: NvmlSession) -> None:
        self.session = session
        self._set: Any = None
        self.state = "closed"  # closed | watching | not supported: ... | failed: ...
        self._handles: dict[int, int] = {}  # id(handle struct address) -> index

    def open(self) -> str:
        nv = self.session.library
        if nv is None or self._set is not None:
            return self.state
        try:
            event_set = nv.nvmlEventSetCreate()
            for index in range(int(nv.nvmlDeviceGetCount())):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, event_set)
                self._handles[_address(handle)] = index
        except nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            unsupported = code in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND)
            self.state = f"{'not supported' if unsupported else 'failed'}: {exc}"
            return self.state
        self._set, self.state = event_set, "watching"
        return self.state

    def poll(self, timeout_ms: int = 0, limit: int = 64) -> list[XidEvent]:
        """The XIDs the driver reported since the last poll. Never raises."""
        nv = self.session.library
        if nv is None or self._set is None:
            return []
        found: list[XidEvent] = []
        while len(found) < limit:
            try:
                data = nv.nvmlEventSetWait_v2(self._set, timeout_ms)
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) != nv.NVML_ERROR_TIMEOUT:
                    self.state = f"failed: the event wait failed: {exc}"
                break
            index = self._handles.get(_address(data.device), -1)
            found.append(XidEvent(index, _uuid(nv, data.device), int(data.eventData)))
            timeout_ms = 0
        return found

    def close(self) -> None:
        nv = self.session.library
        if nv is not None and self._set is not None:
            with contextlib.suppress(nv.NVMLError):
                nv.nvmlEventSetFree(self._set)
        self._set, self.state = None, "closed"


def _address(handle: Any) -> int:
    import ctypes

    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


def _uuid(nv: Any, handle: Any) -> str | None:
    try:
        value = nv.nvmlDeviceGetUUID(handle)
    except nv.NVMLError:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
