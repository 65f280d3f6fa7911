"""``townsquare chat`` in a real pseudo-terminal (pexpect): streaming, /mode, follow-ups, Ctrl-C.

The fake LLM is scripted through a file; its ``gate`` holds a response after
the first chunk until the test creates a file, which makes "the first tokens
are on screen before the answer is finished" a deterministic check.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner

from conftest import ago, write_jsonl
from townsquare.cli import main
from townsquare.config import load_settings
from townsquare.llm.fake import SCRIPT_ENV
from townsquare.store import open_store

POSTS: list[dict[str, object]] = [
    {"id": "1", "author": "harbour", "text": "Ferry crossings suspended because of the storm",
     "created_at": ago(hours=3)},
    {"id": "2", "author": "captain", "text": "Captain Haddock says the ferry sails again at 6pm",
     "created_at": ago(minutes=20), "url": "https://ex.org/2"},
]


@pytest.fixture
def chat(tmp_path: Path) -> pexpect.spawn:
    result = CliRunner().invoke(main, ["ingest", "jsonl",
                                       str(write_jsonl(tmp_path / "p.jsonl", POSTS)), "-q"])
    assert result.exit_code == 0, result.output
    gate, slow_gate = tmp_path / "gate", tmp_path / "never"
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"chunks": ["The ferry sails again at 6pm [1]. Ferry",
                    " crossings were suspended because of the storm [2]."], "gate": str(gate)},
        ["He says the ferry sails again at 6pm [1]."],
        {"chunks": ["Captain Haddock says the ferry sails [1]. The", "never shown"],
         "gate": str(slow_gate)},
        ["The ferry sails again [1]."],
    ]))
    env = {**os.environ, SCRIPT_ENV: str(script), "TERM": "xterm-256color", "COLUMNS": "120"}
    child = pexpect.spawn(sys.executable, ["-m", "townsquare", "chat"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(40, 120))
    child.gate = gate  # type: ignore[attr-defined]
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_chat_streams_switches_mode_and_follows_up(chat: pexpect.spawn) -> None:
    chat.expect("townsquare chat")
    chat.expect_exact("regular> ")

    chat.sendline("what about the ferry?")
    chat.expect_exact("The ferry sails again at 6pm [1].")
    # Streaming, sentence by sentence (each verified before it is shown): the first
    # sentence is on screen while the rest is still being "generated".
    assert "suspended" not in chat.before + chat.after + chat.buffer
    chat.gate.touch()  # type: ignore[attr-defined]
    chat.expect_exact("Ferry crossings were suspended because of the storm [2].")
    chat.expect_exact("Sources:")
    chat.expect_exact("[1] @captain")
    chat.expect_exact("https://ex.org/2")
    chat.expect_exact("regular> ")

    chat.sendline("/mode fun")
    chat.expect_exact("(mode: fun)")
    chat.expect_exact("fun> ")
    chat.sendline("and what about him?")
    chat.expect_exact("He says the ferry sails again at 6pm [1].")
    chat.expect_exact("fun> ")

    chat.sendline("/id")
    chat.expect(r"\(conversation: (conv_[0-9a-f]+)\)")
    conv_id = chat.match.group(1)
    chat.expect_exact("fun> ")

    # Ctrl-C stops an answer and returns to the prompt.
    chat.sendline("what is the captain saying about the ferry?")
    chat.expect_exact("Captain Haddock says the ferry sails [1].")
    chat.sendintr()
    chat.expect_exact("[interrupted]")
    chat.expect_exact("fun> ")

    chat.sendline("/new")
    chat.expect_exact("(new conversation)")
    chat.sendline("ferry?")
    chat.expect_exact("The ferry sails again [1].")
    chat.expect_exact("fun> ")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0

    store = open_store("", load_settings().home)
    try:
        conv = store.get_conversation(conv_id, None)
    finally:
        store.close()
    assert conv is not None
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    follow = conv.messages[2]
    assert follow.meta["mode"] == "fun"
    assert follow.meta["plan"]["followup"] and "ferry" in follow.meta["plan"]["search_text"]


def test_unknown_mode_is_reported_and_help_is_shown(chat: pexpect.spawn) -> None:
    chat.expect_exact("regular> ")
    chat.sendline("/mode grumpy")
    chat.expect_exact("unknown mode 'grumpy'")
    chat.sendline("/help")
    chat.expect_exact("/new")
    chat.sendline("/quit")
    chat.expect(pexpect.EOF)


@pytest.mark.slow
def test_chat_with_the_local_model_streams_and_follows_up(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ingest", "jsonl",
                                       str(write_jsonl(tmp_path / "p.jsonl", POSTS)), "-q"])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "TOWNSQUARE_LLM": "local", "TERM": "xterm-256color"}
    child = pexpect.spawn(sys.executable, ["-m", "townsquare", "chat"], env=env,
                          encoding="utf-8", timeout=240, dimensions=(40, 120))
    try:
        child.expect_exact("SmolLM2")
        child.expect_exact("regular> ")
        child.sendline("What is happening with the ferry?")
        child.expect(r"(Sources|Posts considered):")
        answer = child.before
        assert "ferry" in answer.lower() or "captain" in answer.lower()
        child.expect_exact("regular> ")
        child.sendline("and what about the captain?")
        child.expect(r"(Sources|Posts considered):")
        child.expect_exact("@captain")
        child.expect_exact("regular> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)
