"""The batching rules of ``service.report_batch``, with a fake clock (no Ray)."""

from __future__ import annotations

from service.report_batch import EVALUATIONS, ReportBatcher, newest, rows


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _batcher(every_s: float = 1.0):
    sent: list[tuple[dict, object]] = []
    clock = Clock()
    return ReportBatcher(lambda r, c: sent.append((r, c)), every_s, clock), sent, clock


def _steps(sent) -> list[list[int]]:
    return [[row["step"] for row in rows(result)] for result, _ in sent]


def test_records_wait_until_due_then_go_together_oldest_first():
    batcher, sent, clock = _batcher(every_s=1.0)
    for step in range(3):
        clock.now += 0.3
        batcher.add({"step": step, "eval_loss": float(step)})
    assert sent == []  # 0.9 s: nothing is due yet
    clock.now += 0.3
    batcher.add({"step": 3, "eval_loss": 3.0})
    assert _steps(sent) == [[0, 1, 2, 3]]
    result, checkpoint = sent[0]
    assert result["step"] == 3 and result["eval_loss"] == 3.0  # the newest is the top level
    assert checkpoint is None and newest(result) == {"step": 3, "eval_loss": 3.0}


def test_a_checkpoint_takes_everything_pending_with_it():
    batcher, sent, clock = _batcher(every_s=100.0)
    batcher.add({"step": 0})
    batcher.add({"step": 1}, checkpoint="ckpt-1")
    batcher.add({"step": 2})
    assert _steps(sent) == [[0, 1]] and sent[0][1] == "ckpt-1"
    batcher.add({"step": 3}, last=True)
    assert _steps(sent) == [[0, 1], [2, 3]] and sent[1][1] is None
    batcher.flush()
    assert len(sent) == 2  # nothing pending: no empty report


def test_every_record_alone_when_every_s_is_zero():
    batcher, sent, _ = _batcher(every_s=0.0)
    for step in range(3):
        batcher.add({"step": step})
    assert _steps(sent) == [[0], [1], [2]]
    assert all(EVALUATIONS not in result for result, _ in sent)  # a lone record is the result


def test_the_due_time_counts_from_the_last_send():
    batcher, sent, clock = _batcher(every_s=1.0)
    clock.now = 5.0
    batcher.add({"step": 0})  # 5 s since the start: due
    clock.now = 5.5
    batcher.add({"step": 1})
    assert _steps(sent) == [[0]]
    clock.now = 6.0
    batcher.add({"step": 2})
    assert _steps(sent) == [[0], [1, 2]]


def test_rows_of_an_unbatched_result_is_the_result():
    assert rows({"step": 4}) == [{"step": 4}]
    assert rows({"step": 2, EVALUATIONS: [{"step": 1}, {"step": 2}]}) == [{"step": 1}, {"step": 2}]
