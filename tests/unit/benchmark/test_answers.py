"""tests/benchmark/answers.py reports a figure for each reader and for the reuse check."""

from __future__ import annotations

import re

from tests.benchmark import answers


def test_it_reports_every_figure(capsys):
    assert answers.main(["--runs", "2", "--answers", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [re.match(r"(.+?)\s+\d+\.\d+ us", line).group(1) for line in lines]
    assert names == ["ours", "h11", "reuse check, plain", "reuse check, TLS"]


def test_both_readers_read_the_answer_they_are_timed_on():
    from connector.sink.http11 import AnswerReader

    answer = AnswerReader().feed(answers.ANSWER)
    assert answer is not None and answer.status == 204 and answer.reusable
    answers.h11_reads()()  # raises unless h11 reaches the answer's end
