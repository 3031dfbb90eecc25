"""The stack (middle floor): the compose file rendered from settings, realised with docker-py.

- `render` / `write`: agent/compose/docker-compose.yml filled in (agent.stack.render)
- `load_project`: the rendered file as services in dependency order (agent.stack.project)
- `reconcile`, `down`, `status`, `logs`: the engine side (agent.stack.realise)
"""

from agent.stack.project import (
    L_HASH,
    L_PROJECT,
    L_SERVICE,
    Project,
    Service,
    gpu_request,
    load_project,
    parse_port,
)
from agent.stack.realise import (
    ImageUnavailable,
    ServiceStatus,
    down,
    ensure_images,
    last_lines,
    logs,
    project_containers,
    reconcile,
    status,
)
from agent.stack.render import (
    COMPOSE_FILE,
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
)

__all__ = [
    "COMPOSE_FILE",
    "L_HASH",
    "L_PROJECT",
    "L_SERVICE",
    "TEMPLATE",
    "UI",
    "VLLM",
    "ImageUnavailable",
    "Project",
    "Rendered",
    "Service",
    "ServiceStatus",
    "StackSpec",
    "check_keys",
    "down",
    "ensure_images",
    "env_file",
    "gpu_request",
    "last_lines",
    "load_project",
    "logs",
    "parse_port",
    "project_containers",
    "reconcile",
    "render",
    "status",
    "variables",
    "write",
    "write_env_files",
]
