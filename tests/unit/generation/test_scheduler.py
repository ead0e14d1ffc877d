"""Continuous batching against a fake model whose next token is fixed per slot state."""

import threading
import time

import numpy as np

from generation.scheduler import SamplingParams, Scheduler

VOCAB = 50
EOS = 0


class CountingModel:
    """Next token = (last token + 1) % VOCAB, skipping EOS unless the prompt asked for it."""

    vocab_size = VOCAB

    def __init__(self, max_batch=4, max_len=64):
        self.max_batch, self.max_len = max_batch, max_len
        self.last = {}
        self.decode_batches: list[list[int]] = []
        self.lock = threading.Lock()

    def _logits(self, token):
        row = np.zeros(VOCAB, dtype=np.float32)
        row[(token + 1) % VOCAB or 1] = 10.0
        return row

    def prefill(self, slot, ids):
        self.last[slot] = ids[-1]
        return self._logits(ids[-1])

    def decode(self, slots, last_tokens):
        with self.lock:
            self.decode_batches.append(list(slots))
        return np.stack([self._logits(t) for t in last_tokens])

    def release(self, slot):
        self.last.pop(slot, None)


class Collector:
    def __init__(self):
        self.tokens, self.finish, self.done = [], None, threading.Event()

    def __call__(self, token, finish):
        if token is not None:
            self.tokens.append(token)
        if finish is not None:
            self.finish = finish
            self.done.set()


GREEDY = SamplingParams(temperature=0.0)


def run_scheduler(model, eos=(EOS,)):
    s = Scheduler(model, set(eos))
    s.start()
    return s


def test_max_tokens_and_length_finish():
    s = run_scheduler(CountingModel())
    c = Collector()
    s.submit([5], 4, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert (c.tokens, c.finish) == ([6, 7, 8, 9], "length")


def test_eos_finishes_with_stop_and_is_not_emitted():
    s = run_scheduler(CountingModel(), eos=(8,))
    c = Collector()
    s.submit([5], 10, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert (c.tokens, c.finish) == ([6, 7], "stop")


def test_sequences_share_decode_steps_and_slots_are_reused():
    model = CountingModel(max_batch=2)
    s = run_scheduler(model)
    collectors = [Collector() for _ in range(5)]
    for i, c in enumerate(collectors):
        s.submit([10 * i + 1], 5, GREEDY, c)
    assert all(c.done.wait(5) for c in collectors)
    s.stop()
    assert [c.tokens for c in collectors] == [[10 * i + 2 + k for k in range(5)] for i in range(5)]
    assert any(len(batch) == 2 for batch in model.decode_batches)  # batched together
    assert max(len(batch) for batch in model.decode_batches) <= 2  # never more than the slots
    assert s.active == 0


def test_cancel_frees_the_slot_for_waiting_requests():
    model = CountingModel(max_batch=1, max_len=10_000)
    s = run_scheduler(model)
    long, short = Collector(), Collector()
    seq = s.submit([1], 5000, GREEDY, long)
    s.submit([1], 3, GREEDY, short)
    time.sleep(0.05)
    s.cancel(seq)
    assert long.done.wait(5) and long.finish == "cancelled"
    assert short.done.wait(5) and short.tokens == [2, 3, 4]
    s.stop()
    assert s.active == 0


def test_a_request_cancelled_while_waiting_leaves_the_running_ones_alone():
    s = Scheduler(CountingModel(max_batch=2, max_len=10_000), {EOS})
    running, gone, after = Collector(), Collector(), Collector()
    s.submit([1], 200, GREEDY, running)
    s.cancel(s.submit([1], 3, GREEDY, gone))  # its caller left before it got a slot
    s.submit([1], 3, GREEDY, after)
    s.start()  # all three wait: the cancelled one comes up while another is admitted
    assert running.done.wait(5) and after.done.wait(5) and gone.done.wait(5)
    s.stop()
    assert (running.finish, len(running.tokens)) == ("length", 200)
    assert gone.finish == "cancelled" and gone.tokens == []
    assert (after.finish, after.tokens) == ("length", [2, 3, 4])


def test_context_window_bounds_generation():
    s = run_scheduler(CountingModel(max_len=6))
    c = Collector()
    s.submit([1, 2, 3], 100, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert len(c.tokens) == 3 and c.finish == "length"


class RecordingModel(CountingModel):
    """Records the order of prefill chunks and decode steps."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, int]] = []

    def prefill(self, slot, ids):
        self.calls.append(("prefill", len(ids)))
        return super().prefill(slot, ids)

    def decode(self, slots, last_tokens):
        self.calls.append(("decode", len(slots)))
        return super().decode(slots, last_tokens)


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps():
    model = RecordingModel(max_batch=2, max_len=10_000)
    s = Scheduler(model, {EOS}, prefill_chunk=100)
    running, long = Collector(), Collector()
    s.start()
    seq = s.submit([1], 5000, GREEDY, running)
    time.sleep(0.05)
    s.submit(list(range(1, 1001)), 3, GREEDY, long)  # 10 chunks of 100
    assert long.done.wait(5)
    s.cancel(seq)
    assert running.done.wait(5)
    s.stop()
    chunks = [i for i, c in enumerate(model.calls) if c == ("prefill", 100)]
    assert len(chunks) == 10
    # The running sequence kept decoding between the long prompt's chunks.
    between = model.calls[chunks[0] : chunks[-1]]
    assert sum(1 for c in between if c[0] == "decode") >= 9
    assert len(long.tokens) == 3 and long.finish == "length"


def test_short_prompts_share_one_iteration_budget():
    model = RecordingModel(max_batch=8)
    s = Scheduler(model, {EOS}, prefill_chunk=64)
    collectors = [Collector() for _ in range(6)]
    for i, c in enumerate(collectors):
        s.submit([i + 1] * 10, 2, GREEDY, c)
    s.start()
    assert all(c.done.wait(5) for c in collectors)
    s.stop()
    first_decode = next(i for i, c in enumerate(model.calls) if c[0] == "decode")
    assert first_decode == 6  # all six 10-token prompts before the first decode step
    assert model.calls[first_decode] == ("decode", 6)
