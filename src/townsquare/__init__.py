"""townsquare: an open, self-hostable real-time assistant.

Data flows left to right, one package per arrow:
sources -> ingest -> store (+ index) -> retrieval -> answer -> surfaces (cli, service).
"""

__version__ = "0.1.0"
