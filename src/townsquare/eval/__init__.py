"""Answer-quality evaluation: question sets, a deterministic scorer, and a runner.

``townsquare eval`` (and ``benchmarks/bench_quality.py``) run a question set
through any LLM backend and score every answer from its public JSON
(``Answer.to_dict()``), with rules rather than a model (no hub downloads):

- :mod:`townsquare.eval.sets`: the sets (built-in ``breaking``, the
  ``Tweets.csv`` questions, or your own JSON file);
- :mod:`townsquare.eval.score`: the metrics, per answer;
- :mod:`townsquare.eval.text` / :mod:`townsquare.eval.lang`: folding, words,
  figures, names; language identification (py3langid);
- :mod:`townsquare.eval.runner`: fresh temporary store, ingest, ask, score;
- :mod:`townsquare.eval.report`: the table, the totals against the targets, JSON.

The scorer shares no code with the answer engine it measures.
"""

from townsquare.eval.score import AnswerScore, Expectation, score_answer

__all__ = ["AnswerScore", "Expectation", "score_answer"]
