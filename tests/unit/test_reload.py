"""The reloader's own logic, with stand-in generations (no broker): see tests/integration/test_reload.py
for real workers under load."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amqprpc.reload import _changed, _snapshot, _source_filter

from ..waiting import wait_until

pytest.importorskip("watchfiles")

# A stand-in for ``amqprpc run``: it counts its start, the first one edits the watched source
# *before* it reports ready (as a user saving while the workers start), then it serves until
# SIGTERM.
GENERATION = textwrap.dedent('''
    import os, signal, sys
    from amqprpc.reload import notify_ready
    starts, source = sys.argv[1], sys.argv[2]
    with open(starts, "a") as out:
        out.write("start\\n")
    if open(starts).read().count("start") == 1:
        with open(source, "a") as edited:
            edited.write("EDITED = True\\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    notify_ready()
    while True:
        signal.pause()
''')

RELOADER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from amqprpc.reload import Reloader
    folder, generation, starts, source = sys.argv[1:5]
    command = [sys.executable, generation, starts, source]
    sys.exit(Reloader(command, [Path(folder)], out=sys.stdout, ready_timeout=30).run())
''')


def test_an_edit_saved_while_the_first_workers_start_is_reloaded(tmp_path: Path) -> None:
    watched = tmp_path / "app"
    watched.mkdir()
    source = watched / "service.py"
    source.write_text("VERSION = 1\n")
    generation, reloader = tmp_path / "generation.py", tmp_path / "reloader.py"
    generation.write_text(GENERATION)
    reloader.write_text(RELOADER)
    starts, log = tmp_path / "starts", tmp_path / "reloader.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(reloader), str(watched), str(generation), str(starts), str(source)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: starts.exists() and starts.read_text().count("start") == 2,
                   "the reloader to start a second generation for the early edit", timeout=20)
        wait_until(lambda: "service.py changed" in log.read_text(), "the reloader to name the edit")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, log.read_text()
    assert log.read_text().count("serving the new code") == 2, log.read_text()


def test_the_snapshot_sees_edits_additions_and_removals_of_sources_only(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    edited, removed, cached = tmp_path / "pkg" / "a.py", tmp_path / "b.py", tmp_path / "__pycache__"
    edited.write_text("A = 1\n")
    removed.write_text("B = 1\n")
    cached.mkdir()
    (cached / "a.py").write_text("")
    config = tmp_path / "amqprpc.toml"
    config.write_text("")
    wanted = _source_filter([tmp_path, config])
    before = _snapshot([tmp_path, config], wanted)
    assert set(before) == {str(edited), str(removed), str(config)}

    edited.write_text("A = 22\n")
    removed.unlink()
    (tmp_path / "c.py").write_text("")
    (tmp_path / "notes.txt").write_text("not a source")
    after = _snapshot([tmp_path, config], wanted)
    assert _changed(before, after) == {str(edited), str(removed), str(tmp_path / "c.py")}
