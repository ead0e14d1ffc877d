import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.stops import StopMatcher


def run(stops, pieces):
    m = StopMatcher(stops)
    out, stopped = "", False
    emitted = []
    for piece in pieces:
        text, stopped = m.feed(piece)
        emitted.append(text)
        out += text
        if stopped:
            break
    if not stopped:
        out += m.flush()
    return out, stopped, emitted


def test_stop_spanning_pieces_is_cut_and_never_leaked():
    out, stopped, emitted = run(["\n\n"], ["Hello", " world", "\n", "\nmore"])
    assert (out, stopped) == ("Hello world", True)
    assert "\n" not in "".join(emitted)


def test_text_that_only_looks_like_a_stop_start_is_released():
    out, stopped, emitted = run(["END"], ["The E", "ND", "ing"])
    assert (out, stopped) == ("The ", True)
    out, stopped, _ = run(["END"], ["The E", "nd is near"])
    assert (out, stopped) == ("The End is near", False)


def test_earliest_of_several_stops_wins():
    out, stopped, _ = run(["world", "lo"], ["hello world"])
    assert (out, stopped) == ("hel", True)


@given(st.text(alphabet="ab\n", max_size=30), st.text(alphabet="ab\n", min_size=1, max_size=3), st.data())
def test_streamed_equals_cutting_the_whole_text(text, stop, data):
    # However the text is split into deltas, the output is the text cut before the stop.
    stops = [stop]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    hits = [i for s in stops if (i := text.find(s)) >= 0]
    want = text[: min(hits)] if hits else text
    out, stopped, _ = run(stops, pieces)
    assert out == want and stopped == bool(hits)


@pytest.mark.parametrize("stops", [[], [""]])
def test_no_stops_passes_everything(stops):
    assert run(stops, ["a", "b"]) == ("ab", False, ["a", "b"])
