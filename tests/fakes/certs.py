"""Real certificates for the tests, made with the openssl command line and laid out in a
certificate store the way Caddy (certmagic) keeps them: `<store>/caddy/certificates/<issuer>/
<name>/<name>.crt`, the leaf first, then an intermediate."""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path


def pem(name: str, days: int) -> bytes:
    """A self-signed P-256 certificate for `name`, valid from now for `days` days (-1: it
    expired a day ago; past 2049 openssl writes a GeneralizedTime)."""
    with tempfile.TemporaryDirectory() as folder:
        key, first, out = (Path(folder) / n for n in ("key.pem", "first.pem", "out.pem"))
        make = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        subj = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
        subprocess.run(
            [*make, "-nodes", "-keyout", key, "-out", first, *subj, "-days", "1"],
            check=True,
            capture_output=True,
        )
        # `x509 -days` takes -1 (req does not): re-sign with the validity asked for
        subprocess.run(
            ["openssl", "x509", "-in", first, "-signkey", key, "-days", str(days), "-out", out],
            check=True,
            capture_output=True,
        )
        return out.read_bytes()


def not_after(data: bytes) -> datetime:
    """What openssl itself reads as the certificate's notAfter."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate"], input=data, check=True, capture_output=True
    ).stdout.decode()
    stamp = out.strip().split("=", 1)[1]  # "Nov 30 21:52:57 2026 GMT"
    return datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)


def place(store: Path, issuer: str, name: str, data: bytes, chain: bytes | None = None) -> Path:
    """Write `data` (and a second certificate after it, as a chain) where Caddy keeps it."""
    folder = store / "caddy" / "certificates" / issuer / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.crt"
    path.write_bytes(data + (chain if chain is not None else pem("Intermediate CA", 3650)))
    (folder / f"{name}.json").write_text(json.dumps({"sans": [name]}))
    return path
