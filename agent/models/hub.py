"""The Hub: a revision resolved to a commit and its files, the files vLLM needs, config.json,
and huggingface_hub's exceptions as errors that say what to do.

huggingface_hub is imported inside functions only: it is slow to import and reads its
environment at import time, so every call passes `endpoint=`, `token=` and `cache_dir=`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import validate as v
from agent.errors import BadInput
from agent.models.cache import cache_root
from agent.models.errors import (
    BadToken,
    ConnectionLost,
    GatedModel,
    HubUnreachable,
    ModelError,
    ModelNotFound,
    NotEnoughDisk,
)
from agent.refs import ModelRef
from agent.results import Record
from agent.settings import Settings

WEIGHT_FORMATS = (".safetensors", ".bin", ".pt", ".pth")  # preference order
OTHER_WEIGHTS = (".gguf", ".msgpack", ".h5", ".onnx", ".ckpt", ".ot")
KEEP = (".json", ".model", ".tiktoken", ".txt", ".jinja", ".py", "tokenizer", "vocab", "merges")


@dataclass(frozen=True)
class RepoFile(Record):
    path: str
    size: int
    sha256: str | None = None  # LFS files: the blob is named by it
    blob_id: str | None = None  # git files: the blob is named by the git oid

    @property
    def etag(self) -> str | None:
        return self.sha256 or self.blob_id


def select_files(paths: Iterable[str]) -> list[str]:
    """What vLLM needs: one weight format (safetensors first), config, tokenizer, templates.

    Never the same weights twice: `.bin`/`.pt`/`.gguf` beside safetensors, Meta's `original/`
    checkpoint, Mistral's `consolidated.safetensors` beside the sharded HF files.
    """
    paths = sorted(set(paths))
    top = [p for p in paths if not p.startswith("original/")]
    chosen: list[str] = []
    for suffix in WEIGHT_FORMATS:
        chosen = [p for p in top if p.endswith(suffix)]
        if chosen:
            break
    sharded = [p for p in chosen if not Path(p).name.startswith("consolidated")]
    chosen = sharded or chosen
    fmt = Path(chosen[0]).suffix if chosen else ""
    keep = set(chosen)
    for p in top:
        name = Path(p).name
        if p.endswith(WEIGHT_FORMATS + OTHER_WEIGHTS) or name.startswith("."):
            continue
        if name.endswith(".index.json") and not name.endswith(f"{fmt}.index.json"):
            continue  # the index of a weight format we did not choose
        if name.endswith(KEEP) or name.startswith(("tokenizer", "vocab", "merges")):
            keep.add(p)
    return sorted(keep)


@dataclass(frozen=True)
class Resolved:
    ref: ModelRef
    commit: str
    gated: bool
    files: tuple[RepoFile, ...]
    selected: tuple[RepoFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.selected)

    @property
    def weight_bytes(self) -> int:
        return sum(f.size for f in self.selected if f.path.endswith(WEIGHT_FORMATS))


@contextlib.contextmanager
def hub_errors(settings: Settings, ref: ModelRef, token: str | None) -> Iterator[None]:
    """Translate huggingface_hub's exceptions into errors that say what to do."""
    import httpx2
    from huggingface_hub import errors as hf

    page = f"https://huggingface.co/{ref.repo_id}"
    token_file = settings.paths.secrets / "hf_token"
    try:
        yield
    except hf.GatedRepoError:
        raise gated_error(settings, ref, token) from None
    except hf.RemoteEntryNotFoundError:
        raise ModelNotFound(
            f"a file the Hub lists for {ref} cannot be downloaded (404)",
            fix=f"try again later; if it persists, pick another revision of {page}",
        ) from None
    except hf.RevisionNotFoundError:
        raise ModelNotFound(
            f"{ref.repo_id} has no revision {ref.revision!r}",
            fix=f"use a branch, tag or commit listed at {page}/tree/main",
        ) from None
    except hf.RepositoryNotFoundError:
        raise ModelNotFound(
            f"{ref.repo_id} was not found on {settings.hub.endpoint}",
            fix=f"check the id at {page} (org/name, case matters); a private model "
            f"needs a token in {token_file} or HF_TOKEN",
        ) from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            raise BadToken(
                "the Hugging Face token was refused (401 invalid credentials)",
                fix=f"create a read token at https://huggingface.co/settings/tokens and "
                f"write it to {token_file}, or set HF_TOKEN",
            ) from None
        raise HubUnreachable(
            f"{settings.hub.endpoint} answered {status or 'an error'} for {ref}",
            fix="try again later; https://status.huggingface.co shows outages",
        ) from None
    except (httpx2.TransportError, hf.LocalEntryNotFoundError) as exc:
        raise ConnectionLost(
            f"cannot reach {settings.hub.endpoint}: {type(exc).__name__}",
            fix="check the network, DNS and proxy of this box, or hub.endpoint "
            "(HF_ENDPOINT); finished files are kept, run the pull again",
        ) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NotEnoughDisk(
            f"the disk under {settings.paths.models} filled up while fetching {ref}",
            fix="free space there (`sandbox-agent model rm OLD`) or move "
            "paths.models to a larger disk, then pull again",
        ) from None


def gated_error(settings: Settings, ref: ModelRef, token: str | None) -> GatedModel:
    page = f"https://huggingface.co/{ref.repo_id}"
    token_file = settings.paths.secrets / "hf_token"
    if not token:
        return GatedModel(
            f"{ref.repo_id} is gated: a Hugging Face token is needed and none is set",
            fix=f"accept the licence at {page} (logged in), then write a read token to "
            f"{token_file} (0600) or set HF_TOKEN",
        )
    return GatedModel(
        f"the account of the Hugging Face token has no access to gated {ref.repo_id}",
        fix=f"accept the licence at {page} with that account and wait for approval; the "
        f"token is read from {token_file} or HF_TOKEN",
    )


def check_token_endpoint(settings: Settings, token: str | None) -> None:
    """The HF token goes over https, or to a loopback endpoint; plain http elsewhere only when
    hub.allow_plain_http says so; to a link-local address (the cloud's metadata service,
    169.254.169.254) never. Checked before any request that carries it."""
    if not token:
        return
    where = "hub.endpoint"
    split = urlsplit(settings.hub.endpoint)
    host = split.hostname or ""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        found = set()  # unresolvable: the request fails by itself, and sends nothing
    # an IPv4-mapped answer (::ffff:169.254.169.254) is the IPv4 address it stands for
    addresses = [v.unmapped(ipaddress.ip_address(a.split("%")[0])) for a in found | _literal(host)]
    if any(a.is_link_local for a in addresses):
        raise BadInput(
            where,
            f"{settings.hub.endpoint} is a link-local address: the Hugging Face token is "
            "never sent there",
            fix="set hub.endpoint (HF_ENDPOINT) to https://huggingface.co or your mirror",
        )
    loopback = host == "localhost" or (addresses and all(a.is_loopback for a in addresses))
    if split.scheme != "https" and not loopback and not settings.hub.allow_plain_http:
        raise BadInput(
            where,
            f"{settings.hub.endpoint} is plain http: the Hugging Face token would cross the "
            "network unencrypted",
            fix="use an https endpoint, or set hub.allow_plain_http: true (HF_ALLOW_PLAIN_HTTP) "
            "for a mirror you trust on a private network",
        )


def _literal(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host.strip("[]")))}
    except ValueError:
        return set()


def resolve(settings: Settings, ref: ModelRef, token: str | None) -> Resolved:
    """Revision -> commit, the file list with sizes, gated or not. One request."""
    from huggingface_hub import HfApi

    check_token_endpoint(settings, token)
    api = HfApi(endpoint=settings.hub.endpoint, token=token or False)
    with hub_errors(settings, ref, token):
        info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
    files = tuple(
        RepoFile(
            s.rfilename,
            int(s.lfs.size if s.lfs else s.size or 0),
            s.lfs.sha256 if s.lfs else None,
            s.blob_id,
        )
        for s in info.siblings or ()
    )
    chosen = set(select_files(f.path for f in files))
    resolved = Resolved(
        ref, str(info.sha), bool(info.gated), files, tuple(f for f in files if f.path in chosen)
    )
    if resolved.gated and not token:
        raise gated_error(settings, ref, token)
    return resolved


def read_config(settings: Settings, resolved: Resolved, token: str | None) -> dict[str, Any]:
    """config.json of the resolved commit (fetched into the cache; also proves access)."""
    from huggingface_hub import hf_hub_download

    check_token_endpoint(settings, token)
    if "config.json" not in (f.path for f in resolved.files):
        raise ModelNotFound(
            f"{resolved.ref} has no config.json: vLLM cannot load it (GGUF-only or not a "
            "transformers model?)",
            fix=f"pick a repo with config.json and safetensors weights, see "
            f"https://huggingface.co/{resolved.ref.repo_id}/tree/main",
        )
    with hub_errors(settings, resolved.ref, token):
        path = hf_hub_download(
            resolved.ref.repo_id,
            "config.json",
            revision=resolved.commit,
            cache_dir=cache_root(settings),
            endpoint=settings.hub.endpoint,
            token=token or False,
        )
    return load_config(Path(path), resolved.ref)


def load_config(path: Path, ref: ModelRef) -> dict[str, Any]:
    """A config.json as a dict, or a `ModelError` saying it is unreadable."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read config.json of {ref}: {exc}",
            fix=f"run `sandbox-agent model pull {ref}` again",
        ) from None
    if not isinstance(config, dict):
        raise ModelError(
            f"config.json of {ref} is not a JSON object",
            fix="pick a transformers model (its config.json is an object)",
        )
    return config
