"""Language-aware full-text search in PostgreSQL, and user text made safe for it.

Each post is indexed with the text search configuration of its language
(``posts.lang``): ``en`` English and ``fr`` French stemming, plus German,
Spanish, Italian and Portuguese because PostgreSQL ships them; anything else
(or no language) gets ``simple`` (lower-case, no stemming). Each of these is
copied into the store's schema as ``ts_<name>`` with the ``unaccent``
dictionary in front of the stemmer when the server has the extension, so
"ecole" finds "école" and "GRÈVE" finds "#greve", as SQLite's
``remove_diacritics`` does. Without ``unaccent`` the copies are plain (accents
then matter); ``Store.stats()`` says which.

The ``tsv`` column is generated from the text (weight A), the hashtags (B)
and the author (C); ``ts_rank_cd`` ranks with weights 1.0 / 0.8 / 0.5, the
BM25 column weights the SQLite store uses, and divides by 1 + log(length) as
BM25 favours short posts.

User text never reaches ``to_tsquery``: it is split into word tokens exactly
as the SQLite store does (stop words dropped, at most 32), each token is
normalized by PostgreSQL under every configuration a post might have been
indexed with (as ``plainto_tsquery`` would), and the distinct lexemes are
OR-ed. So any string is safe, a French question matches French stems, and
posts containing more of the words rank higher (OR semantics, like the
SQLite store).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql

from townsquare.store.query_words import query_tokens

#: Post language code -> PostgreSQL's built-in configuration for it.
LANGUAGE_CONFIGS: dict[str, str] = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
}
FALLBACK = "simple"
#: Characters of a post's text that are indexed (a tsvector is capped at 1 MB).
INDEXED_CHARS = 100_000
#: ts_rank_cd weights in {D, C, B, A} order: (unused), author, hashtags, text.
RANK_WEIGHTS = "{0.1, 0.5, 0.8, 1.0}"
#: 1 = divide the rank by 1 + log(document length).
RANK_NORMALIZATION = 1


def config_name(base: str) -> str:
    """The store's own copy of a built-in configuration."""
    return f"ts_{base}"


def qualified(schema: str, base: str) -> str:
    """``"schema"."ts_base"``, as ``regconfig`` input parses it whatever the schema's name."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, config_name(base)))


def all_configs() -> list[str]:
    return [*dict.fromkeys([*LANGUAGE_CONFIGS.values(), FALLBACK])]


def create_configs_sql(
    schema: str, unaccent_dict: tuple[str, str] | None
) -> list[sql.Composed]:
    """CREATE TEXT SEARCH CONFIGURATION statements for every configuration we use."""
    out: list[sql.Composed] = []
    for base in all_configs():
        name = sql.Identifier(schema, config_name(base))
        out.append(
            sql.SQL("CREATE TEXT SEARCH CONFIGURATION {} (COPY = {})").format(
                name, sql.Identifier("pg_catalog", base)
            )
        )
        if unaccent_dict:
            stem = sql.Identifier("pg_catalog", "simple" if base == FALLBACK else f"{base}_stem")
            out.append(
                sql.SQL(
                    "ALTER TEXT SEARCH CONFIGURATION {} ALTER MAPPING FOR hword, hword_part, word "
                    "WITH {}, {}"
                ).format(name, sql.Identifier(*unaccent_dict), stem)
            )
    return out


def _config_case(schema: str) -> sql.Composed:
    """``CASE lang WHEN 'en' THEN '<schema>.ts_english'::regconfig … END``."""
    whens = [
        sql.SQL("WHEN {} THEN {}::regconfig").format(
            sql.Literal(code), sql.Literal(qualified(schema, base))
        )
        for code, base in LANGUAGE_CONFIGS.items()
    ]
    fallback = sql.Literal(qualified(schema, FALLBACK))
    return sql.SQL("CASE lang {} ELSE {}::regconfig END").format(sql.SQL(" ").join(whens), fallback)


def tsv_expression(schema: str) -> sql.Composed:
    """The generated ``tsv`` column's expression (immutable: configs are OID constants)."""
    case = _config_case(schema)
    simple = sql.Literal(qualified(schema, FALLBACK))
    return sql.SQL(
        "setweight(to_tsvector({case}, left(text, {cap})), 'A') || "
        "setweight(to_tsvector({case}, hashtags), 'B') || "
        "setweight(to_tsvector({simple}::regconfig, author), 'C')"
    ).format(case=case, cap=sql.Literal(INDEXED_CHARS), simple=simple)


def configs_for(langs: Iterable[str]) -> list[str]:
    """Configurations to parse a query with: those of ``langs``, or all of them."""
    chosen = [LANGUAGE_CONFIGS.get(lang, FALLBACK) for lang in langs]
    return [*dict.fromkeys([*chosen, FALLBACK])] if chosen else all_configs()


#: Quote a lexeme for tsquery input: double backslashes and single quotes, then wrap.
_QUOTED_LEXEME = r"'''' || replace(replace(lex, '\', '\\'), '''', '''''') || ''''"

_TSQUERY = sql.SQL(
    "(SELECT string_agg(DISTINCT " + _QUOTED_LEXEME + ", ' | ')::tsquery "
    "FROM unnest(%s::text[]) AS t(tok), unnest(%s::regconfig[]) AS c(cfg), "
    "unnest(tsvector_to_array(to_tsvector(c.cfg, t.tok))) AS lex)"
)


def tsquery_sql(text: str, langs: Sequence[str] = ()) -> tuple[sql.SQL, list[Any]] | None:
    """An OR of every distinct lexeme of the query's tokens, or None if it has no words.

    Returns a scalar SQL expression of type tsquery and its two parameters
    (the tokens, the configurations): user text only ever travels as a bound
    parameter. Each token goes through ``to_tsvector`` under each
    configuration (the normalization ``plainto_tsquery`` applies); the
    distinct lexemes that come out are quoted and OR-ed. De-duplicating
    matters: ``ts_rank_cd`` costs grow with the number of query operands, and
    the configurations mostly agree. A query of nothing but stop words gives
    NULL, which matches nothing. One SQL text for every query, so the server
    prepares it once per connection.
    """
    tokens = query_tokens(text)
    if not tokens:
        return None
    return _TSQUERY, [tokens, [config_name(base) for base in configs_for(langs)]]
