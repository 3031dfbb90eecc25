"""The watchdog's Prometheus metrics (prometheus_client, its own registry), served on
`watch.metrics_bind:watch.metrics_port` (loopback, 8471 by default). vLLM's own /metrics stays
vLLM's: nothing of it is re-exported here.

- sandbox_agent_service_state{service,state}       1 for the state the service is in
- sandbox_agent_service_restarts_total{service,reason}
- sandbox_agent_service_crashes_total{service,reason}   Docker's restarts (exit, oom)
- sandbox_agent_watch_last_tick_timestamp_seconds  the loop's last successful step
- sandbox_agent_gpu_utilization_ratio, _memory_used_bytes, _memory_total_bytes,
  _temperature_celsius, _power_watts {gpu,uuid}; sandbox_agent_gpu_xid_events_total{gpu,uuid,xid}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.watchdog.machine import STATES, Machine

if TYPE_CHECKING:
    from agent.gpu import GpuInventory


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.state = Gauge(
            "sandbox_agent_service_state",
            "1 for the state the service is in",
            ["service", "state"],
            registry=r,
        )
        self.restarts = Counter(
            "sandbox_agent_service_restarts",
            "Restarts by the watchdog",
            ["service", "reason"],
            registry=r,
        )
        self.crashes = Counter(
            "sandbox_agent_service_crashes",
            "Exits restarted by Docker's policy",
            ["service", "reason"],
            registry=r,
        )
        self.last_tick = Gauge(
            "sandbox_agent_watch_last_tick_timestamp_seconds",
            "Wall-clock time of the watch loop's last successful step",
            registry=r,
        )
        labels = ["gpu", "uuid"]
        self.gpu: dict[str, Any] = {
            name: Gauge(f"sandbox_agent_gpu_{name}", text, labels, registry=r)
            for name, text in (
                ("utilization_ratio", "GPU utilisation, 0 to 1"),
                ("memory_used_bytes", "GPU memory in use"),
                ("memory_total_bytes", "GPU memory"),
                ("temperature_celsius", "GPU temperature"),
                ("power_watts", "GPU power draw"),
            )
        }
        self.xid = Counter(
            "sandbox_agent_gpu_xid_events",
            "XID events from the driver",
            ["gpu", "uuid", "xid"],
            registry=r,
        )
        self._server: Any = None
        self._shown: dict[str, str] = {}

    def serve(self, port: int, bind: str) -> None:
        from prometheus_client import start_http_server

        self._server = start_http_server(port, addr=bind, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            server.server_close()
            self._server = None

    def tick(self, machines: Mapping[str, Machine], wall: float) -> None:
        for service, machine in machines.items():
            if self._shown.get(service) != machine.state:
                self._shown[service] = machine.state
                for state in STATES:
                    self.state.labels(service, state).set(1 if machine.state == state else 0)
        self.last_tick.set(wall)

    def restarted(self, service: str, reason: str) -> None:
        self.restarts.labels(service, reason).inc()

    def crashed(self, service: str, reason: str) -> None:
        self.crashes.labels(service, reason).inc()

    def gpus(self, inventory: GpuInventory) -> None:
        for g in inventory.gpus:
            labels = (str(g.index), g.uuid or "")
            values = {
                "utilization_ratio": None if g.utilization is None else g.utilization / 100,
                "memory_used_bytes": g.memory_used,
                "memory_total_bytes": g.memory_total,
                "temperature_celsius": g.temperature_c,
                "power_watts": g.power_w,
            }
            for name, value in values.items():
                if value is not None:
                    self.gpu[name].labels(*labels).set(value)

    def xid_seen(self, index: int, uuid: str | None, xid: int) -> None:
        self.xid.labels(str(index), uuid or "", str(xid)).inc()

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
