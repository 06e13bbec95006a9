"""The DATA spool on its own (``mailserver.smtp.dataspool``) and the DATA reader spilling into it.

A spool gives back exactly what was written, however it was cut; its file is 0600, never holds the
plaintext, and goes with ``discard``; an altered, truncated or extended file is refused. The reader
gives the same message whether it spilled or not, for every split of the input (the reader's own
``oracle``), and keeps no spool file when the message is refused.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.smtp import dataspool
from mailserver.smtp.data import DataReader
from mailserver.smtp.dataspool import DataSpool, SpoolError
from tests.fuzzing import examples
from tests.smtp.test_data_reader import GRAMMAR, LIMIT, LINE, feed_chunks

TEXT = b"Compte rendu: IRM cerebrale sans anomalie.\r\n"


@settings(max_examples=examples(300), deadline=None)
@given(pieces=st.lists(st.binary(max_size=40), max_size=12), chunk=st.sampled_from([1, 7, 64]))
def test_a_spool_gives_back_what_was_written(pieces: list[bytes], chunk: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        spool = DataSpool(Path(d), chunk=chunk)
        for p in pieces:
            spool.write(p)
        assert spool.size == sum(map(len, pieces))
        assert spool.read_all() == b"".join(pieces)
        spool.discard()
        assert list(Path(d).iterdir()) == []


def test_the_file_is_private_sealed_and_removed(tmp_path: Path) -> None:
    spool = DataSpool(tmp_path, chunk=100)
    spool.write(TEXT * 50)
    spool.flush()
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    on_disk = spool.path.read_bytes()
    assert len(on_disk) > len(TEXT) * 50 and b"IRM" not in on_disk and b"Compte" not in on_disk
    assert spool.read_all() == TEXT * 50
    spool.discard()
    spool.discard()  # idempotent
    assert not spool.path.exists()
    with pytest.raises(SpoolError):
        spool.read_all()


def test_a_dropped_spool_removes_its_file(tmp_path: Path) -> None:
    spool = DataSpool(tmp_path)
    spool.write(TEXT)
    path = spool.path
    del spool
    assert not path.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_an_altered_file_is_refused(tmp_path: Path, damage: str) -> None:
    spool = DataSpool(tmp_path, chunk=100)
    spool.write(TEXT * 10)
    spool.flush()
    data = bytearray(spool.path.read_bytes())
    if damage == "flip":
        data[10] ^= 1
    elif damage == "truncate":
        del data[-5:]
    else:
        data += data[:120]
    spool.path.write_bytes(data)
    with pytest.raises(SpoolError):
        spool.read_all()
    spool.discard()


def test_prepare_removes_only_spool_files(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    assert dataspool.prepare(d) == 0
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    (d / "data-abc.spool").write_bytes(b"x")
    (d / "notes.txt").write_bytes(b"x")
    assert dataspool.prepare(d) == 1
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


@settings(max_examples=examples(2_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=GRAMMAR, cuts=st.binary(max_size=8), spill_at=st.sampled_from([0, 3, 10]))
def test_a_reader_that_spills_gives_the_same_message_for_every_split(data: bytes, cuts: bytes, spill_at: int) -> None:
    expected = feed_chunks([data], LIMIT, LINE)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    with tempfile.TemporaryDirectory() as d:
        made: list[DataSpool] = []

        def spill() -> DataSpool:
            made.append(DataSpool(Path(d), chunk=5))
            return made[-1]

        r = DataReader(size_limit=LIMIT, max_line_length=LINE, spill_at=spill_at, spill=spill)
        got = None
        for n, chunk in enumerate(chunks):
            if chunk:
                rest = r.feed(chunk)
                if r.done:
                    got = r.result(), rest + b"".join(chunks[n + 1 :])
                    break
        if got is None:
            r.discard()
            assert expected is None
        else:
            assert expected is not None
            result, rest = got
            if result.spool is not None:
                assert result.content == b"" and result.problem is None
                content = result.spool.read_all()
                result.spool.discard()
            else:
                content = result.content
            assert (content, result.size, result.problem, rest) == (
                expected[0].content,
                expected[0].size,
                expected[0].problem,
                expected[1],
            )
            if result.problem is None:  # spilled past spill_at octets kept, and only then
                assert bool(made) == (len(content) > spill_at)
        assert list(Path(d).iterdir()) == []  # a refused, unfinished or read message keeps no file
