"""An apt repository's signing key: from the offline bundle when it holds one, else downloaded
over https; either way checked to be an OpenPGP public key before apt is told to trust it.

A bundle (packaging/) may carry `apt-keys/<name>.asc`, the key of the repository `<name>`
(docker, cuda-debian12, nvidia-container-toolkit): then it is pinned at build time and never
fetched on the box. apt reads a `.asc` keyring as ASCII armour, so a binary key (what
`gpg --export` writes) is armoured here (RFC 9580 6.2, with the CRC-24 older readers check).
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from pathlib import Path

from agent import http_client, log
from agent.errors import AgentError

KEYS = "apt-keys"  # the bundle's folder of keys
MAX_KEY = 1 << 20  # a public key with its signatures is a few KiB
BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
END = "-----END PGP PUBLIC KEY BLOCK-----"
PUBLIC_KEY = 6  # the OpenPGP packet tag of a public key


def signing_key(name: str, url: str, bundle: Path | None) -> bytes:
    """The key of repository `name` as ASCII armour: the bundle's, else the one at `url`."""
    if bundle is not None and (kept := bundle / KEYS / f"{name}.asc").is_file():
        key = armoured(kept.read_bytes()[: MAX_KEY + 1])
        if key is None:
            raise AgentError(
                f"{kept} is not an OpenPGP public key",
                fix=f"put the key from {url} there, or remove the file to download it",
            )
        log.get("bootstrap").info("apt.key", repo=name, source=str(kept))
        return key
    host = urllib.parse.urlsplit(url).hostname or url
    fix = (
        f"check that this box reaches {host} over https, or put the key in the bundle "
        f"as {KEYS}/{name}.asc; then run `sandbox-agent bootstrap` again"
    )
    try:
        data = http_client.download(url, limit=MAX_KEY)
    except http_client.DownloadFailed as exc:
        raise AgentError(f"the {name} apt repository's key: {exc.message}", fix=fix) from None
    key = armoured(data)
    if key is None:
        raise AgentError(
            f"the {name} apt repository's key: what {host} sent from {url} is not an OpenPGP "
            "public key (a proxy's or a captive portal's page?)",
            fix=fix,
        )
    log.get("bootstrap").info("apt.key", repo=name, source=url)
    return key


def armoured(data: bytes) -> bytes | None:
    """`data` as an ASCII-armoured public key, or None when it is none (armoured or binary)."""
    if len(data) > MAX_KEY:
        return None
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(BEGIN.encode()):
        packets = _dearmour(text)
        return text if packets is not None and is_public_key(packets) else None
    return _armour(data) if is_public_key(data) else None


def is_public_key(packets: bytes) -> bool:
    """The packets start with a public-key packet of a known version (RFC 9580 4.2, 5.5.2)."""
    if len(packets) < 3 or not packets[0] & 0x80:
        return False
    head = packets[0]
    if head & 0x40:  # the new packet format: the tag, then a length of 1, 2 or 5 octets
        tag, first = head & 0x3F, packets[1]
        offset = 2 if first < 192 else 3 if first < 224 else 6 if first == 255 else 0
    else:  # the legacy format: the length's size is in the tag octet
        tag, offset = (head >> 2) & 0x0F, (2, 3, 5, 0)[head & 0x03]
    return tag == PUBLIC_KEY and 0 < offset < len(packets) and packets[offset] in (3, 4, 5, 6)


def _dearmour(text: bytes) -> bytes | None:
    try:
        lines = [line.strip() for line in text.decode("ascii").splitlines()]
        body = lines[1 : lines.index(END)]
    except (UnicodeDecodeError, ValueError):
        return None
    if "" in body:  # armour headers (Version:, Comment:) end with an empty line
        body = body[body.index("") + 1 :]
    data = "".join(line for line in body if not line.startswith("="))  # =XXXX: the CRC
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _armour(packets: bytes) -> bytes:
    encoded = base64.b64encode(packets).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    crc = base64.b64encode(_crc24(packets).to_bytes(3, "big")).decode()
    return "\n".join([BEGIN, "", *lines, f"={crc}", END, ""]).encode()


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF
