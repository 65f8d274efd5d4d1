"""bench/span_cost.py's cut of one CSV into span folders: every row in exactly one span, in file order, each span
with the header (what `run --data` reads as span-1/ .. span-N/)."""
from bench.span_cost import cut_into_spans
from pipeline import spans


def test_every_row_lands_in_one_span_in_order(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(11)))
    counts = cut_into_spans(source, tmp_path / "spans", 3)
    assert counts == [3, 3, 5]  # equal counts, the rest in the last span
    rows = []
    for k in (1, 2, 3):
        lines = (tmp_path / "spans" / f"span-{k}" / "data.csv").read_text().splitlines()
        assert lines[0] == "a,b"
        rows += lines[1:]
    assert rows == [f"{i},x{i}" for i in range(11)]
    found = spans.discover(tmp_path / "spans")
    assert found.pattern == spans.SPAN_LAYOUT[0] and found.spans == [1, 2, 3]
