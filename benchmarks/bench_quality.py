"""Answer quality with any LLM backend: ``townsquare eval`` as a benchmark script.

    .venv/bin/python benchmarks/bench_quality.py [--llm local|openai|fake]
        [--openai-base-url URL --openai-model NAME] [--tweets PATH | --no-tweets]
        [--only IDS] [--answers] [--json]

Every option is ``townsquare eval``'s (see ``townsquare eval --help`` and the
README's "Answer quality"): the built-in ``breaking`` set (four French and
English breaking stories) plus the Tweets.csv questions when
``../shared/data/tweets/Tweets.csv`` is present, asked in a fresh temporary
store, scored per answer (supported sentences, quote fidelity, fact recall,
forbidden claims, newest post cited first, language, repetition, time to
first token, total time) and totalled against issue 11's targets.
"""

from __future__ import annotations

import sys

from townsquare.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]], prog_name="bench_quality.py"))
