"""Answers: retrieve the freshest relevant posts, have an LLM write a short cited answer.

The public entry is :class:`AnswerEngine` (see :mod:`townsquare.answer.engine`
for the API, :mod:`townsquare.answer.contract` for what goes in and out); the other
modules are its parts, one job each: ``language``
(the asker's language, fixed texts), ``query`` (question -> search),
``prompt``, ``compose`` (answers from the posts' own words), ``verify`` (the
sentence gate), ``sanitize`` (nothing fetchable in answer text),
``citations``, ``personas``, ``policy``.
"""

from townsquare.answer.citations import Citation
from townsquare.answer.contract import (
    Answer,
    AnswerEvent,
    AnswerRequest,
    ConversationNotFound,
    Delta,
    Final,
    UnknownModel,
)
from townsquare.answer.engine import AnswerEngine
from townsquare.answer.personas import Persona, Personas, UnknownPersona
from townsquare.answer.policy import Policy

__all__ = [
    "Answer",
    "AnswerEngine",
    "AnswerEvent",
    "AnswerRequest",
    "Citation",
    "ConversationNotFound",
    "Delta",
    "Final",
    "Persona",
    "Personas",
    "Policy",
    "UnknownModel",
    "UnknownPersona",
]
