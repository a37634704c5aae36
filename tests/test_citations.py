"""Quotes found in a turn and looked up in the document (battles.evidence.citations)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from battles.evidence.citations import Citation, DocumentIndex, answered, cite_all, find_quotes, tally
from tests.support.documents import ESSAY

pytestmark = pytest.mark.one_pass

PLAN = """# Business plan

Our product will win every market within a year.
Revenue grows 40% each quarter — measured over 2025 — with no new hires.
The team has shipped three products
and each of them made money.
"""


def test_double_quoted_text_of_four_words_or_more_is_a_quote() -> None:
    text = 'It says "our product will win" and "too short" and “curly quotes are quotes too”.'
    assert find_quotes(text) == ["our product will win", "curly quotes are quotes too"]


def test_a_blockquote_line_is_a_quote_and_counts_once() -> None:
    text = 'First:\n> The team has shipped "three products" so far\n>   \nThen "a quoted passage of words".'
    assert find_quotes(text) == ['The team has shipped "three products" so far', "a quoted passage of words"]


def test_quotes_do_not_span_paragraphs() -> None:
    assert find_quotes('He said "one two\n\nthree four five" then') == []


def test_an_exact_quote_verifies_at_its_line() -> None:
    index = DocumentIndex(PLAN)
    assert index.cite("Our product will win every market within a year.") == Citation(
        "Our product will win every market within a year.", True, 3, 3
    )


def test_a_quote_across_a_line_break_covers_both_lines() -> None:
    citation = DocumentIndex(PLAN).cite("The team has shipped three products and each of them made money")
    assert (citation.verified, citation.start_line, citation.end_line) == (True, 5, 6)


def test_curly_quotes_a_whitespace_change_and_one_typo_still_verify() -> None:
    document = 'The board said "we will grow fast" and it was right.\n'
    quote = "The board said “we  will grow fsat” and it was"
    citation = DocumentIndex(document).cite(quote)
    assert citation.verified and (citation.start_line, citation.end_line) == (1, 1)


def test_dash_and_case_variants_verify() -> None:
    quote = "revenue grows 40% each quarter -- measured over 2025 - with no new hires"
    assert DocumentIndex(PLAN).cite(quote.replace("--", "–")).verified


def test_a_dropped_word_verifies() -> None:
    assert DocumentIndex(PLAN).cite("Our product will win every market within year").verified


def test_an_ellipsis_may_leave_words_out() -> None:
    citation = DocumentIndex(PLAN).cite("Revenue grows 40% each quarter … with no new hires")
    assert (citation.verified, citation.start_line) == (True, 4)


def test_an_invented_quote_does_not_verify() -> None:
    index = DocumentIndex(ESSAY)
    for invented in (
        "Profits will triple within a single quarter",
        "Teams that write tests ship 90% more features",
        "Tests are a waste of every engineer's time",
    ):
        assert index.cite(invented) == Citation(invented, False, None, None)


def test_citations_keep_the_turns_order_and_text() -> None:
    turn = '1. "Our product will win every market within a year."\n2. "Nobody ever wrote this sentence here."'
    assert [(c.quote, c.verified, c.start_line) for c in cite_all(DocumentIndex(PLAN), turn)] == [
        ("Our product will win every market within a year.", True, 3),
        ("Nobody ever wrote this sentence here.", False, None),
    ]


def test_tally_and_answered_attacks() -> None:
    attacks = [Citation("a", True, 3, 3), Citation("b", True, 5, 6), Citation("c", False)]
    answers = [Citation("a", True, 3, 3), Citation("x", True, 6, 6)]
    assert tally(attacks).as_dict() == {"verified": 2, "unverified": 1}
    assert answered(attacks, answers) == 2
    assert answered(attacks, [Citation("c", False)]) == 0


def test_citations_round_trip_through_their_stored_form() -> None:
    for citation in (Citation("a b c d", True, 2, 4), Citation("e f g h", False)):
        assert Citation.from_dict(citation.as_dict()) == citation


# Words as a document has them: letters or digits (accented too), with punctuation, curly quotes or
# dashes around them.
_punctuation = st.text(alphabet=st.sampled_from(".,;:!?'’“”-–—()%"), max_size=2)
_word = st.builds(
    lambda before, core, after: before + core + after,
    _punctuation,
    st.text(
        alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789é"), min_size=1, max_size=8
    ),
    _punctuation,
)
_separator = st.sampled_from([" ", " ", " ", "  ", "\n", " \n", "\t"])


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.tuples(_word, _separator), min_size=4, max_size=60),
    data=st.data(),
)
def test_any_run_of_four_or_more_words_of_a_document_verifies_at_its_lines(words, data) -> None:
    document = "".join(word + sep for word, sep in words)
    start = data.draw(st.integers(0, len(words) - 4), label="start")
    end = data.draw(st.integers(start + 4, len(words)), label="end")
    # The quote as an agent copies it: the same words, one space between them.
    quote = " ".join(word for word, _ in words[start:end])
    offset = sum(len(w) + len(s) for w, s in words[:start])
    span = "".join(w + s for w, s in words[start:end]).rstrip()
    citation = DocumentIndex(document).cite(quote)
    assert citation.verified
    expected_lines = (
        document.count("\n", 0, offset) + 1,
        document.count("\n", 0, offset + len(span) - 1) + 1,
    )
    # The same words may also stand earlier in the document: then that earlier place is cited.
    assert (citation.start_line, citation.end_line) == expected_lines or (
        citation.start_line is not None and citation.start_line <= expected_lines[0]
    )
