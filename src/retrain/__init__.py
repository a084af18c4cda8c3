"""retrain: a TOML-first RLVR trainer and experiment toolkit for LLM reasoning research."""

__version__ = "0.1.0"
