"""``lm`` with ``answers: false``: a pre-training stage on a task file learns the language of
its prompts, never the labels (the file holds ``prompt_cls``'s test rows too), and keeps
``prompt_cls``'s vocabulary so its checkpoint loads into the fine-tuning model."""

from __future__ import annotations

from pathlib import Path

from trainers.data import load_dataset

SST2 = Path(__file__).resolve().parents[2] / "examples" / "data" / "sst2_tiny.jsonl"
TASK = {"template": "{text} It was", "label_words": [" terrible", " great"]}


def test_without_answers_no_label_word_is_trained_on_and_the_vocabulary_is_kept():
    with_answers = load_dataset("lm", path=str(SST2), seq_len=16, n_test=8, **TASK)
    without = load_dataset("lm", path=str(SST2), seq_len=16, n_test=8, answers=False, **TASK)
    task = load_dataset("prompt_cls", path=str(SST2), k_shot=4, n_test=50, **TASK)
    assert without.num_classes == with_answers.num_classes == task.model_hints["vocab_size"]
    labels = set(task.model_hints["label_token_ids"])

    def tokens(d):
        return set(d.train_x.unique().tolist()) | set(d.test_x.unique().tolist())

    assert labels <= tokens(with_answers)  # the check can fail: answers are there by default
    assert not labels & tokens(without)
