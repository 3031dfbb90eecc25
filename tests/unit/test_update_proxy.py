"""`update --proxy-image` where no proxy runs: refused before anything changes (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import deploy, settings, switch
from agent.errors import BadInput


def test_a_proxy_image_without_a_proxy_is_refused_with_nothing_changed(
    write_config, tmp_path: Path
) -> None:
    config = write_config({"https": {"domain": "off"}, "ui": {"bind": "0.0.0.0"}})
    before = config.read_text()
    s = settings.load(config)

    def reload(flags: object) -> settings.Settings:
        raise AssertionError("nothing is reloaded: the refusal comes first")

    with pytest.raises(BadInput) as caught:
        switch.update(s, config, reload, deploy.UpOptions(), proxy_image="caddy:2.10.3")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        "--proxy-image: no proxy runs (https.domain is off, or auto without a Linode name, or "
        "nothing faces the network); nothing was changed"
    )
    assert "once the door is open (HTTPS_DOMAIN" in (caught.value.fix or "")
    assert config.read_text() == before
    assert sorted(p.name for p in s.paths.state.glob("*")) == []  # no journal, no lock
