"""Progress without a terminal: plain lines (items, rate, time left) at every tenth and at the end."""

from qa_forge.core.progress import Progress


def test_plain_lines_at_every_tenth_and_at_the_end(capsys):
    bar = Progress("answering", 25)
    for done in (1, 2, 3, 5, 9, 12, 24, 25):  # the loop reports done counts in uneven steps
        bar.update(done)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    # a tenth of 25 is 3 (rounded up): lines when done reaches 3, 6, 9, ..., and at 25
    assert [ln.split()[1] for ln in lines] == ["3/25", "9/25", "12/25", "24/25", "25/25"]
    assert all("/s" in ln and "left" in ln for ln in lines)
    bar.update(25)  # finished: nothing more
    assert capsys.readouterr().err == ""
