"""The house rules, read from the code: floors, room sizes, one command runner, lazy imports.

Floors, ground first: nothing imports a higher floor, and a peer never imports another peer
(they meet through the ground, or in the work floor above them). A new room must be given a
floor here: an unknown room fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
FLOORS: dict[str, tuple[str, ...]] = {
    "ground": (
        "agent",
        "errors",
        "files",
        "log",
        "proc",
        "validate",
        "folders",
        "settings",
        "refs",
        "results",
        "secrets",
        "engine",
        "maintenance",
        "markers",
        "facts",
        "http_client",
        "door",
    ),
    "peers": (
        "host",
        "probes",
        "gpu",
        "models",
        "stack",
        "systemd_client",
        "unitfile",
        "linode",
        "motd",
    ),
    "work": (
        "service_health",
        "gate",
        "deploy",
        "doctor",
        "checks",
        "switch",
        "watchdog",
        "steps",
        "bootstrap",
        "backup",
        "overview",
    ),
    "cli": ("cli",),
}
LEVEL = {name: i for i, name in enumerate(FLOORS)}
ROOM_FLOOR = {room: floor for floor, rooms in FLOORS.items() for room in rooms}
HEAVY = ("docker", "huggingface_hub", "pynvml", "httpx2", "structlog", "psutil", "requests")
MAX_LINES = 400


def room_of(module: str) -> str:
    """agent.models.pull -> models; agent -> agent."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(AGENT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def agent_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of agent code, lazy ones inside functions included."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("agent")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agent":  # `from agent import gpu, log`: each name is a room
                for alias in node.names:
                    is_room = (AGENT / alias.name).is_dir() or (AGENT / f"{alias.name}.py").exists()
                    found.append((node.lineno, f"agent.{alias.name}" if is_room else "agent"))
            elif node.module.startswith("agent."):
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(AGENT.rglob("*.py"))


def test_every_room_has_a_floor() -> None:
    rooms = {room_of(module_name(p)) for p in SOURCES}
    assert rooms - set(ROOM_FLOOR) == set(), "give each new room a floor in FLOORS"


def test_the_verbs_reach_their_streams_through_the_environment() -> None:
    """sys.stdin, sys.stdout and sys.stderr only in cli/environment.py, in the CLI: a verb
    writes to and asks of the Environment it is handed (httpie's), so a test hands another."""
    users = set()
    for p in sorted((AGENT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
                and node.attr in ("stdin", "stdout", "stderr")
            ):
                users.add(p.name)
    assert users == {"environment.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENT.parent)))
def test_no_import_runs_up_a_floor_or_across_peers(path: Path) -> None:
    here = room_of(module_name(path))
    wrong = []
    for line, module in agent_imports(path):
        there = room_of(module)
        if there == here:
            continue
        up = LEVEL[ROOM_FLOOR[there]] > LEVEL[ROOM_FLOOR[here]]
        across = ROOM_FLOOR[here] == ROOM_FLOOR[there] == "peers"
        if up or across:
            wrong.append(f"line {line}: {here} ({ROOM_FLOOR[here]}) imports {module}")
    assert wrong == []


def test_the_floor_check_can_fail(tmp_path: Path) -> None:
    """The reader sees lazy imports and `from agent import x`; so the rule above can fail."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from agent import cli, log\n    import agent.stack.apply\n")
    assert agent_imports(sample) == [(2, "agent.cli"), (2, "agent.log"), (3, "agent.stack.apply")]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENT.parent)))
def test_rooms_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name}: is it two rooms?"


def test_one_way_to_run_a_command() -> None:
    users = [
        str(p.relative_to(AGENT))
        for p in SOURCES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            (getattr(node, "module", None) or a.name).split(".")[0] == "subprocess"
            for a in node.names
        )
    ]
    assert users == ["proc.py"]


def test_one_reader_of_the_environment() -> None:
    """os.environ, os.environb and os.getenv only in cli/environment.py: the rest of the agent is
    handed what it needs (settings, the token, systemd's variables), so tests pass it in."""
    readers = set()
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                hit = node.value.id == "os" and node.attr in ("environ", "environb", "getenv")
            elif isinstance(node, ast.ImportFrom):
                hit = node.module == "os" and any(
                    a.name in ("environ", "environb", "getenv") for a in node.names
                )
            else:
                continue
            if hit:
                readers.add(str(p.relative_to(AGENT)))
    assert readers == {"cli/environment.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENT.parent)))
def test_heavy_libraries_are_imported_where_they_are_used(path: Path) -> None:
    """Module-level imports of docker, huggingface_hub, pynvml... would make every command
    (and `--help`, and soon `watch`) pay for them; type-only imports are fine."""
    top = []
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        top += [n for n in names if n.split(".")[0] in HEAVY]
    assert top == []


def test_every_package_of_the_agent_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages explicitly: a new package left out is a wheel that
    installs and then fails to import (`No module named 'agent.settings'`)."""
    import tomllib

    listed = set(
        tomllib.loads((AGENT.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {module_name(p) for p in SOURCES if p.name == "__init__.py"}
    assert found - listed == set()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENT.parent)))
def test_no_room_is_packed_to_fit(path: Path) -> None:
    """No formatter escape in agent/: a room packed under the size rule is two rooms."""
    text = path.read_text()
    assert "fmt: skip" not in text and "fmt: off" not in text
