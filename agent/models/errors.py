"""The models room's errors: each says what happened and what to do next."""

from __future__ import annotations

from agent.errors import AgentError


class ModelError(AgentError):
    """A model could not be resolved, fetched or removed."""


class GatedModel(ModelError): ...


class ModelNotFound(ModelError): ...


class BadToken(ModelError): ...


class HubUnreachable(ModelError): ...


class ConnectionLost(HubUnreachable):
    """A transport error: worth another try, finished files are kept."""


class NotEnoughDisk(ModelError): ...


class ModelNotCached(ModelError): ...


class ModelInUse(ModelError): ...
