"""`build.py release` on this checkout, its dependencies from a local folder (the wheelhouse the
system tests use): the published folder holds the agent's wheel, a requirements.txt with the
sha256 of every dependency wheel found there that a target accepts, and the template stamped
with the URL and both files' sha256."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.wheelhouse import build_module, dependency_wheels
from tests.fakes.wheels import make_wheel

REPO = Path(__file__).resolve().parents[2]
BUILD = [sys.executable, str(REPO / "packaging" / "build.py")]
OLD_ONLY = {"tomli", "exceptiongroup"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_release_from_a_local_folder_is_hashed_and_stamped(tmp_path: Path) -> None:
    deps = dependency_wheels()
    out = tmp_path / "release"
    url = "http://127.0.0.1:8080/sandbox/v0.1.0"
    done = subprocess.run(
        [*BUILD, "release", str(out), "--base-url", url + "/", "--find-links", str(deps)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}-manylinux-x86_64"
    assert f"complete for: {here}" in done.stderr
    assert done.stdout == f"{out / 'stackscript.sh'}\n"
    [wheel] = out.glob("linode_ai_sandbox_agent-*-py3-none-any.whl")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [wheel.name, "requirements.txt", "stackscript.sh"]
    )

    script = (out / "stackscript.sh").read_text()
    assert f"\nRELEASE_URL='{url}'\n" in script
    assert f"\nAGENT_WHEEL='{wheel.name}'\n" in script
    assert f"\nAGENT_SHA256='{sha(wheel)}'\n" in script
    assert f"\nREQUIREMENTS_SHA256='{sha(out / 'requirements.txt')}'\n" in script
    assert (out / "stackscript.sh").stat().st_mode & 0o777 == 0o755

    text = (out / "requirements.txt").read_text()
    assert f"\n./{wheel.name} --hash=sha256:{sha(wheel)}\n" in text
    hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", text)) - {sha(wheel)}
    hashlock = build_module().hashlock
    py310 = [t for t in hashlock.TARGETS if t.python == "3.10"]
    wheels = [hashlock.wheel(p) for p in deps.glob("*.whl")]
    # tomli and exceptiongroup are needed on 3.10 only: a wheel of theirs counts if 3.10 takes it
    fits = [w for w in wheels if w.fits(py310 if w.name in OLD_ONLY else hashlock.TARGETS)]
    assert hashes == {sha(w.path) for w in fits}
    assert set(re.findall(r"^([a-z0-9-]+)==", text, re.M)) == {w.name for w in fits}
    assert {w.name for w in wheels} == set(build_module().read_pins())


def test_a_release_refuses_a_bad_url_or_folder_with_exit_2(tmp_path: Path) -> None:
    bad = subprocess.run(
        [*BUILD, "release", str(tmp_path / "a"), "--base-url", "https://x.example/r?v=1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr == (
        "error: --base-url 'https://x.example/r?v=1' is not an http(s) URL of plain characters "
        "(letters, digits and ._~%+=,@- in its path; no query, no quotes)\n"
    )
    nowhere = ["--find-links", str(tmp_path / "nowhere")]
    gone = subprocess.run(
        [*BUILD, "release", str(tmp_path / "b"), "--base-url", "https://x.example/r", *nowhere],
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 2
    assert gone.stderr == f"error: --find-links {tmp_path / 'nowhere'}: not a folder\n"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_download_takes_each_wheel_a_glibc_of_ours_prefers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real pip, a local folder standing in for the index: Ubuntu 22.04 (glibc 2.35) takes a
    manylinux_2_17 build where Ubuntu 24.04 (2.39) takes the 2_38 one, so both are fetched; a
    pin with no wheel for the target leaves the others fetched."""
    index = tmp_path / "index"
    make_wheel(index, "dep-native", "2.0", tag="cp310-cp310-manylinux_2_17_x86_64")
    make_wheel(index, "dep-native", "2.0", tag="cp310-cp310-manylinux_2_38_x86_64")
    make_wheel(index, "dep-native", "2.0", tag="cp310-cp310-manylinux_2_17_aarch64")
    make_wheel(index, "dep-pure", "1.0")
    make_wheel(index, "dep-windows", "3.0", tag="cp310-cp310-win_amd64")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # this machine's pip.conf left out
    hashlock = build_module().hashlock
    got = tmp_path / "got"
    pins = {"dep-native": "2.0", "dep-pure": "1.0", "dep-windows": "3.0"}
    hashlock.download(
        pins,
        got,
        targets=(hashlock.Target("3.10", "x86_64"),),
        glibcs=(35, 39),
        pip_args=("--no-index", "--find-links", str(index)),
    )
    assert sorted(p.name for p in got.iterdir()) == [
        "dep_native-2.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "dep_native-2.0-cp310-cp310-manylinux_2_38_x86_64.whl",
        "dep_pure-1.0-py3-none-any.whl",
    ]
