"""The stack: the compose file rendered from settings, applied and observed with docker-py.

- render: compose/docker-compose.yml filled in, env files for the secrets
- project: the rendered file as services in dependency order, with Compose's labels
- apply: images, network and containers made to match; `down`
- observe: containers, state, health, ports, logs; `status`
"""

from agent.stack.apply import ImageUnavailable, down, ensure_image, ensure_images, reconcile
from agent.stack.containers import port_free, restart_service, stop
from agent.stack.observe import (
    EventStream,
    ServiceStatus,
    StackEvent,
    StackStatus,
    last_lines,
    logs,
    project_containers,
    stack_status,
    status,
    wanted_services,
)
from agent.stack.project import (
    L_HASH,
    L_PROJECT,
    L_SERVICE,
    Project,
    Service,
    load_project,
    parse_port,
)
from agent.stack.render import (
    CLOSED,
    COMPOSE_FILE,
    PROXY,
    TEMPLATE,
    UI,
    VLLM,
    Rendered,
    StackSpec,
    check_keys,
    env_file,
    render,
    variables,
    write,
    write_env_files,
    write_proxy_files,
)

__all__ = [
    "COMPOSE_FILE",
    "L_HASH",
    "L_PROJECT",
    "L_SERVICE",
    "TEMPLATE",
    "UI",
    "VLLM",
    "PROXY",
    "CLOSED",
    "EventStream",
    "ImageUnavailable",
    "Project",
    "Rendered",
    "Service",
    "ServiceStatus",
    "StackEvent",
    "StackSpec",
    "StackStatus",
    "check_keys",
    "down",
    "ensure_image",
    "ensure_images",
    "env_file",
    "port_free",
    "last_lines",
    "load_project",
    "logs",
    "parse_port",
    "project_containers",
    "reconcile",
    "render",
    "restart_service",
    "stack_status",
    "status",
    "stop",
    "variables",
    "wanted_services",
    "write",
    "write_env_files",
    "write_proxy_files",
]
