"""packaging/: the constraints pin every runtime dependency on every target, and a release's
requirements.txt holds the sha256 of exactly the wheels a target's pip may install, so the
StackScript's install is the same on every box and a changed byte stops it."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.fakes.wheelhouse import build_module
from tests.fakes.wheels import make_wheel, rebuilt

ROOT = Path(__file__).resolve().parents[2]
build = build_module()
hashlock = build.hashlock
AGENT = "linode_ai_sandbox_agent-0.1.0-py3-none-any.whl"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_runtime_dependency_is_pinned_exactly() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == build.PROJECT == "linode-ai-sandbox-agent"
    assert project["scripts"] == {"sandbox-agent": "agent.cli:main"}
    pinned = build.read_pins()
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()
        assert name in pinned, f"{name}: run `python packaging/build.py constraints`"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", v) for v in pinned.values())
    # what only CPython 3.10 needs (Ubuntu 22.04's python3) is pinned too
    assert {"tomli", "exceptiongroup"} <= set(pinned)


def test_a_dependency_not_installed_here_and_not_pinned_is_named() -> None:
    with pytest.raises(hashlock.LockError) as caught:
        build.runtime_pins(old={})
    assert str(caught.value) == (
        "tomli (needed by huggingface-hub on cp310-manylinux-x86_64) is not installed here: "
        "add `tomli==VERSION` to constraints.txt by hand"
    )
    assert build.runtime_pins(old=build.read_pins()) == build.read_pins()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Wheels of every kind a dependency ships, for targets and for other platforms."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "dep-pure", "1.0", requires=("dep-extra; extra == 'fast'",))
    for tag in [
        "cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp311-cp311-manylinux_2_28_aarch64",
        "cp312-cp312-manylinux_2_39_x86_64",
        "cp313-cp313-manylinux1_x86_64",
        "cp38-abi3-manylinux_2_17_aarch64",
        # not for any target: another Python, OS, libc, or a glibc newer than Ubuntu 24.04's
        "cp39-cp39-manylinux_2_17_x86_64",
        "cp311-cp311-win_amd64",
        "cp311-cp311-macosx_11_0_arm64",
        "cp311-cp311-musllinux_1_2_x86_64",
        "cp311-cp311-manylinux_2_40_x86_64",
        "pp310-pypy310_pp73-manylinux_2_17_x86_64",
    ]:
        make_wheel(wheels, "dep-native", "2.0", tag=tag)
    make_wheel(wheels, "dep-native", "1.9")  # another version
    make_wheel(wheels, "dep-extra", "3.0")
    make_wheel(wheels, "dep-old-python", "4.0")
    make_wheel(tmp_path / "agent", "linode-ai-sandbox-agent", "0.1.0", requires=REQUIRES)
    return wheels


REQUIRES = (
    "dep-pure[fast]>=1",
    "dep-native",
    "dep-old-python; python_version < '3.11'",
    "pywin32; sys_platform == 'win32'",
)
PINS = {"dep-pure": "1.0", "dep-native": "2.0", "dep-extra": "3.0", "dep-old-python": "4.0"}


def test_the_lock_hashes_every_wheel_a_target_accepts_and_no_other(folder: Path) -> None:
    locked = hashlock.lock(folder.parent / "agent" / AGENT, folder, PINS)
    assert locked.agent_sha256 == sha(folder.parent / "agent" / AGENT)
    native = {
        f"dep_native-2.0-{tag}.whl"
        for tag in [
            "cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64",
            "cp311-cp311-manylinux_2_28_aarch64",
            "cp312-cp312-manylinux_2_39_x86_64",
            "cp313-cp313-manylinux1_x86_64",
            "cp38-abi3-manylinux_2_17_aarch64",
        ]
    }
    assert set(locked.hashes["dep-native"]) == native
    assert all(locked.hashes["dep-native"][n] == sha(folder / n) for n in native)
    assert list(locked.hashes["dep-pure"]) == ["dep_pure-1.0-py3-none-any.whl"]
    assert list(locked.hashes["dep-extra"]) == ["dep_extra-3.0-py3-none-any.whl"]  # the extra
    assert "pywin32" not in locked.needed  # never on a target: no pin needed
    assert locked.needed["dep-old-python"] == {t for t in hashlock.TARGETS if t.python == "3.10"}
    # dep-native has no wheel for CPython 3.11 on x86_64 (only glibc 2.40, musl, Windows)
    assert {str(t): gaps for t, gaps in locked.gaps.items()} == {
        "cp311-manylinux-x86_64": ["dep-native==2.0"]
    }
    assert len(locked.complete()) == len(hashlock.TARGETS) - 1


def test_requirements_txt_pins_each_wheel_with_a_marker_where_needed(folder: Path) -> None:
    locked = hashlock.lock(folder.parent / "agent" / AGENT, folder, PINS)
    text = hashlock.requirements_txt(locked, "release 0.1.0\nsecond line")
    lines = text.splitlines()
    assert lines[:3] == [
        "# release 0.1.0",
        "# second line",
        f"./{AGENT} --hash=sha256:{locked.agent_sha256}",
    ]
    assert (
        f'dep-old-python==4.0 ; python_version == "3.10" \\\n    --hash=sha256:{sha(folder / "dep_old_python-4.0-py3-none-any.whl")}\n'
        in text
    )
    block = text[text.index("dep-native==2.0 \\\n") :].split("\ndep-old")[0]
    assert sorted(re.findall(r"--hash=sha256:([0-9a-f]{64})", block)) == sorted(
        locked.hashes["dep-native"].values()
    )
    assert "dep_native-1.9" not in text and "win" not in text


def test_a_marker_names_exactly_the_targets_where_a_dependency_is_needed() -> None:
    targets = hashlock.TARGETS
    by = {str(t): t for t in targets}
    assert hashlock.marker(set(targets), targets) == ""
    assert hashlock.marker({t for t in targets if t.python in ("3.10", "3.12")}, targets) == (
        'python_version == "3.10" or python_version == "3.12"'
    )
    assert hashlock.marker(
        {
            by["cp311-manylinux-aarch64"],
            by["cp313-manylinux-x86_64"],
            by["cp313-manylinux-aarch64"],
        },
        targets,
    ) == (
        '(python_version == "3.11" and platform_machine == "aarch64") or python_version == "3.13"'
    )


def test_a_missing_or_unfitting_pin_stops_the_lock_with_its_name(folder: Path) -> None:
    agent = folder.parent / "agent" / AGENT
    with pytest.raises(hashlock.LockError) as caught:
        hashlock.lock(agent, folder, {k: v for k, v in PINS.items() if k != "dep-extra"})
    assert str(caught.value).startswith(
        "dep-extra (required by dep-pure on cp310-manylinux-x86_64) has no pin in "
        "packaging/constraints.txt"
    )
    with pytest.raises(hashlock.LockError) as caught:
        hashlock.lock(agent, folder, {**PINS, "dep-pure": "0.9"})
    assert str(caught.value) == (
        "dep-pure==0.9 does not satisfy linode-ai-sandbox-agent's requirement `dep-pure[fast]>=1`"
    )


def test_the_stamp_sets_the_four_release_lines_of_the_template_only() -> None:
    template = (ROOT / "stackscript.sh").read_text()
    values = {
        "RELEASE_URL": "https://example.com/r/v0.1.0",
        "AGENT_WHEEL": AGENT,
        "AGENT_SHA256": "a" * 64,
        "REQUIREMENTS_SHA256": "b" * 64,
    }
    stamped = hashlock.stamp(template, values)
    changed = [
        (old, new)
        for old, new in zip(template.splitlines(), stamped.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [(f"{k}=''", f"{k}='{v}'") for k, v in values.items()]
    with pytest.raises(
        hashlock.LockError, match="the template has no single `RELEASE_URL=''` line"
    ):
        hashlock.stamp(stamped, values)
    with pytest.raises(ValueError, match=r"AGENT_WHEEL: \"x'; rm -rf /\" cannot be stamped"):
        hashlock.stamp(template, {**values, "AGENT_WHEEL": "x'; rm -rf /"})


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/r",
        "https://example.com/r?x=1",
        "https://exa mple.com",
        "https://e.com/$(id)",
        "example.com/r",
    ],
)
def test_a_base_url_that_is_not_plain_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        hashlock.base_url(url)
    assert str(caught.value) == (
        f"--base-url {url!r} is not an http(s) URL of plain characters "
        "(letters, digits and ._~%+=,@- in its path; no query, no quotes)"
    )
    assert (
        hashlock.base_url("http://127.0.0.1:8080/rel/v0.1.0/") == "http://127.0.0.1:8080/rel/v0.1.0"
    )


def locked_pip_args() -> list[str]:
    """The pip arguments the StackScript installs a release and a bundle with."""
    text = (ROOT / "stackscript.sh").read_text()
    [args] = re.findall(r"^LOCKED=\((.*)\)$", text, re.M)
    return shlex.split(args)


def test_a_bundle_installs_by_hash_and_a_changed_byte_stops_it_before_anything_installs(
    tmp_path: Path, real_commands: None
) -> None:
    bundle = tmp_path / "bundle"
    make_wheel(bundle, "dep-pure", "1.0")
    make_wheel(bundle, "dep-native", "2.0", tag="cp38-abi3-manylinux_2_17_x86_64")
    make_wheel(bundle, "dep-native", "2.0", tag="cp38-abi3-manylinux_2_17_aarch64")
    agent = make_wheel(
        bundle, "linode-ai-sandbox-agent", "0.1.0", requires=("dep-pure", "dep-native")
    )
    pins = {"dep-pure": "1.0", "dep-native": "2.0"}
    requirements, _ = build.write_lock(bundle, agent, bundle, pins)  # as build.py bundle does
    assert requirements.read_text().count("--hash=sha256:") == 4

    def install(target: Path) -> subprocess.CompletedProcess[str]:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        return subprocess.run(
            [*pip, "--no-index", "--find-links", ".", "--target", str(target), *locked_pip_args()],
            cwd=bundle,
            capture_output=True,
            text=True,
            env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
        )

    assert locked_pip_args() == [
        "--require-hashes",
        "--only-binary=:all:",
        "-r",
        "requirements.txt",
    ]
    ok = install(tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "linode_ai_sandbox_agent_pkg.py").is_file()
    assert (tmp_path / "ok" / "dep_pure_pkg.py").is_file()

    dep = bundle / "dep_pure-1.0-py3-none-any.whl"
    expected = sha(dep)
    rebuilt(dep)
    refused = install(tmp_path / "refused")
    assert refused.returncode == 1
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in refused.stderr
    assert f"dep-pure==1.0 from file://{dep}" in refused.stderr
    assert re.search(rf"Expected sha256 {expected}\s+Got\s+{sha(dep)}", refused.stderr)
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").iterdir())
