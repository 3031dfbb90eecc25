"""Hugging Face models: resolve on the Hub, pull into the local cache, list, remove, and fit.

The cache is `paths.models` in the HF_HOME layout (see agent.models.cache).
"""

from agent.models.cache import (
    CachedModel,
    ModelList,
    RemoveResult,
    cache_root,
    cached_commit,
    is_complete,
    list_models,
    marker_path,
    remove,
    repo_dir,
    snapshot_path,
    sweep_orphans,
)
from agent.models.errors import (
    BadToken,
    ConnectionLost,
    GatedModel,
    HubUnreachable,
    ModelError,
    ModelInUse,
    ModelNotCached,
    ModelNotFound,
    NotEnoughDisk,
)
from agent.models.fit import NO_FIT_FIX, FitPlan, NoFit, UnsizedModel, parse_memory
from agent.models.hub import (
    WEIGHT_FORMATS,
    RepoFile,
    Resolved,
    check_token_endpoint,
    resolve,
    select_files,
)
from agent.models.pull import PullResult, pull
from agent.models.sizing import FitReport, fit_cached, fit_model
from agent.refs import ModelRef

__all__ = [
    "NO_FIT_FIX",
    "WEIGHT_FORMATS",
    "BadToken",
    "CachedModel",
    "ConnectionLost",
    "FitPlan",
    "FitReport",
    "GatedModel",
    "HubUnreachable",
    "ModelError",
    "ModelInUse",
    "ModelList",
    "ModelNotCached",
    "ModelNotFound",
    "ModelRef",
    "NoFit",
    "NotEnoughDisk",
    "PullResult",
    "RemoveResult",
    "RepoFile",
    "Resolved",
    "UnsizedModel",
    "cache_root",
    "cached_commit",
    "check_token_endpoint",
    "fit_cached",
    "fit_model",
    "is_complete",
    "list_models",
    "marker_path",
    "parse_memory",
    "pull",
    "remove",
    "repo_dir",
    "resolve",
    "select_files",
    "snapshot_path",
    "sweep_orphans",
]
