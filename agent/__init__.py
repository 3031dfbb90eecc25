"""sandbox-agent: a private, self-healing vLLM + Open WebUI stack on a GPU box."""

__version__ = "0.1.0"
