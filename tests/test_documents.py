"""Tests for battles.documents: upload bytes in, text or a user-facing rejection out."""

from __future__ import annotations

import dataclasses
import io
import random
import zipfile

import pytest
from pypdf import PdfReader, PdfWriter

from battles import documents
from battles.documents import (
    MAX_PDF_CHARS,
    MAX_PDF_PAGES,
    PDF_TIME_BUDGET_SECONDS,
    ExtractedText,
    extract_text,
    safe_display_name,
)
from battles.exceptions import DocumentRejected

MB = 1024 * 1024
LIMIT = 2 * MB

FRENCH = (
    "« Bonjour », dit-elle… C’était l’été à Noël, déjà. Le château de la forêt était très ancien ; "
    "les élèves sont allés à l’école près du lac, où ils ont étudié la géographie et l’histoire. "
    "Ça a été une journée agréable, même si le garçon a oublié son cahier à côté de la fenêtre.\n"
)
GERMAN = (
    "Sehr geehrte Damen und Herren,\n\nhiermit möchte ich mich über die Verspätung des Zuges beschweren. "
    "Ich musste über zwei Stunden in Köln warten, und es gab keine Durchsagen. Außerdem war die "
    "Klimaanlage defekt.\n\nMit freundlichen Grüßen\nJörg Weiß\n"
)
CZECH = (
    "Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština používá háčky a čárky, například ř, š, č, ž, ů a ě. "
    "Byl to krásný den na horách a všichni se těšili na večeři.\n"
)
RUSSIAN = (
    "Съешь же ещё этих мягких французских булок, да выпей чаю. В лесу родилась ёлочка, в лесу она росла. "
    "Зимой и летом стройная, зелёная была.\n"
)


def extract(data: bytes, name: str = "notes.txt", max_bytes: int = LIMIT) -> ExtractedText:
    return extract_text(data, name=name, max_bytes=max_bytes)


def rejection(data: bytes, name: str = "notes.txt", max_bytes: int = LIMIT) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as info:
        extract_text(data, name=name, max_bytes=max_bytes)
    return info.value


def make_pdf(page_texts: list[str]) -> bytes:
    """A minimal valid PDF, one Helvetica text line per page, with a correct xref table."""
    page_count = len(page_texts)
    first_page = 4  # objects 1-3 are the catalog, the page tree and the font
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(page_count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(page_texts):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {first_page + 2 * i + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def make_zip(*members: str) -> bytes:
    """A real ZIP archive, as a .docx or .xlsx is, with small compressed members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            archive.writestr(member, "<xml>" + "content " * 50 + "</xml>")
    return buffer.getvalue()


def encrypted_copy(pdf: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password, owner_password="owner-secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# --- Text decoding -------------------------------------------------------------------------------------


def test_utf8_text_is_returned_as_is() -> None:
    text = "Grüße aus Köln — 東京 🎉\nSecond line.\n"
    result = extract(text.encode("utf-8"))
    assert result == ExtractedText(text=text, content_type="text/plain", encoding="utf-8")


def test_utf8_bom_is_stripped() -> None:
    result = extract(b"\xef\xbb\xbf" + "Café au lait\n".encode())
    assert result.text == "Café au lait\n"
    assert result.encoding == "utf-8"


def test_invalid_utf8_after_a_utf8_bom_is_rejected() -> None:
    error = rejection(b"\xef\xbb\xbfabc \xff\xfe\xfd def")
    assert error.status == 400
    assert "UTF-8" in error.reason


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("Grüße — ünïcödé text\n".encode("utf-16"), "utf-16"),
        (b"\xfe\xff" + "Grüße — ünïcödé text\n".encode("utf-16-be"), "utf-16"),
        (b"\xff\xfe" + "Grüße — ünïcödé text\n".encode("utf-16-le"), "utf-16"),
        ("Grüße — ünïcödé text\n".encode("utf-32"), "utf-32"),
    ],
)
def test_utf16_and_utf32_with_bom(data: bytes, encoding: str) -> None:
    result = extract(data)
    assert result.text == "Grüße — ünïcödé text\n"
    assert result.encoding == encoding


def test_utf16_with_bom_but_odd_length_is_rejected() -> None:
    error = rejection("Hello there".encode("utf-16") + b"\x00")
    assert error.status == 400
    assert "UTF-16" in error.reason


def test_cp1252_french_with_smart_punctuation_is_detected() -> None:
    result = extract(FRENCH.encode("cp1252"))
    assert result.text == FRENCH
    assert result.encoding == "cp1252"


def test_latin1_german_is_detected() -> None:
    result = extract(GERMAN.encode("latin-1"))
    assert result.text == GERMAN
    assert result.encoding in {"cp1252", "iso8859-1", "iso8859-15"}


@pytest.mark.parametrize(("text", "encoding"), [(CZECH, "cp1250"), (RUSSIAN, "cp1251")])
def test_other_legacy_code_pages_are_not_forced_to_cp1252(text: str, encoding: str) -> None:
    result = extract(text.encode(encoding))
    assert result.text == text
    assert result.encoding == encoding


def test_line_endings_are_normalised() -> None:
    assert extract(b"one\r\ntwo\rthree\nfour\r\n").text == "one\ntwo\nthree\nfour\n"


def test_nul_characters_are_removed_from_decoded_text() -> None:
    text = "A long enough line of perfectly ordinary text. " * 5 + "\x00end\n"
    result = extract(text.encode("utf-16"))
    assert "\x00" not in result.text
    assert result.text.endswith("end\n")


def test_text_that_merely_starts_like_a_magic_number_is_still_text() -> None:
    assert extract(b"MZ is the prefix of DOS programs.\n").text.startswith("MZ is")
    assert extract(b"BM: body mass.\n").text == "BM: body mass.\n"


# --- Content types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("README.md", "text/markdown"),
        ("notes.MARKDOWN", "text/markdown"),
        ("script.py", "text/x-python"),
        ("app.js", "text/javascript"),
        ("app.ts", "text/x-typescript"),
        ("data.json", "application/json"),
        ("page.html", "text/html"),
        ("table.csv", "text/csv"),
        ("guide.rst", "text/x-rst"),
        ("plain.txt", "text/plain"),
        ("weird.xyz", "text/plain"),
        ("Makefile", "text/plain"),
        ("C:\\Users\\me\\docs\\plan.md", "text/markdown"),
        ("project/src/main.py", "text/x-python"),
    ],
)
def test_content_type_comes_from_the_extension(name: str, content_type: str) -> None:
    assert extract(b"print('hello')\n", name=name).content_type == content_type


# --- Rejections ------------------------------------------------------------------------------------------


def test_empty_file_is_rejected() -> None:
    error = rejection(b"")
    assert error.status == 400
    assert "empty" in error.reason


@pytest.mark.parametrize("data", [b"   \r\n\t \n", "  \n\u3000\n".encode(), "   \n".encode("utf-16")])
def test_whitespace_only_file_is_rejected(data: bytes) -> None:
    error = rejection(data)
    assert error.status == 400
    assert "whitespace" in error.reason


def test_oversized_file_is_rejected_with_413_and_the_limit() -> None:
    error = rejection(b"a" * (3 * MB + 100 * 1024), max_bytes=LIMIT)
    assert error.status == 413
    assert error.reason == "The file is 3.1 MB; the limit is 2 MB."


def test_barely_oversized_file_does_not_claim_to_equal_the_limit() -> None:
    error = rejection(b"a" * (LIMIT + 1), max_bytes=LIMIT)
    assert error.status == 413
    assert "2 MB" in error.reason
    assert "The file is 2 MB" not in error.reason


def test_file_exactly_at_the_limit_is_accepted() -> None:
    assert len(extract(b"a" * 1000, max_bytes=1000).text) == 1000


def test_size_is_checked_before_content() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000
    assert rejection(png, max_bytes=1000).status == 413


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 32, "photo.png", "PNG images"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32, "photo.jpg", "JPEG images"),
        (b"GIF89a\x01\x00\x01\x00" + b"\x00" * 16, "anim.gif", "GIF images"),
        (make_zip("[Content_Types].xml", "word/document.xml"), "cv.docx", "Word documents (.docx)"),
        (make_zip("[Content_Types].xml", "xl/workbook.xml"), "sheet.xlsx", "Excel spreadsheets (.xlsx)"),
        (make_zip("notes.txt"), "bundle.zip", "ZIP archives"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 32, "notes.txt.gz", "gzip archives"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 57, "a.out", "ELF executables"),
        (b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56 + b"PE\x00\x00", "setup.exe", "Windows programs"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 32, "old.doc", "Word documents (.doc)"),
        (b"{\\rtf1\\ansi Hello}", "letter.rtf", "Rich Text files (.rtf)"),
    ],
)
def test_known_binary_formats_are_named(data: bytes, name: str, expected: str) -> None:
    error = rejection(data, name=name)
    assert error.status == 400
    assert expected in error.reason
    assert "not supported" in error.reason


def test_docx_rejection_tells_the_user_what_to_do() -> None:
    docx = make_zip("[Content_Types].xml", "word/document.xml")
    assert rejection(docx).reason == "Word documents (.docx) are not supported; save it as PDF or plain text."


def test_random_bytes_are_rejected() -> None:
    noise = random.Random(42).randbytes(4096)
    error = rejection(noise, name="notes.txt")
    assert error.status == 400


def test_random_bytes_without_nul_are_rejected() -> None:
    noise = random.Random(7).randbytes(4096).replace(b"\x00", b"\x01")
    assert rejection(noise).status == 400


def test_nul_byte_in_non_utf16_data_means_binary() -> None:
    error = rejection(b"looks like text\x00but is not")
    assert error.status == 400
    assert "not text" in error.reason


def test_text_full_of_control_characters_is_rejected() -> None:
    data = bytes(range(1, 9)) * 50 + b"some words"
    error = rejection(data)
    assert error.status == 400
    assert "not text" in error.reason


def test_document_rejected_carries_reason_and_status() -> None:
    error = DocumentRejected("Too big.", status=413)
    assert isinstance(error, ValueError)
    assert (error.reason, error.status, str(error)) == ("Too big.", 413, "Too big.")
    assert DocumentRejected("Nope.").status == 400


def test_extracted_text_is_frozen() -> None:
    result = extract(b"hello\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "changed"  # type: ignore[misc]


# --- PDF -------------------------------------------------------------------------------------------------


def test_pdf_text_is_extracted() -> None:
    result = extract(make_pdf(["Hello arena"]), name="talk.pdf")
    assert result.text == "Hello arena"
    assert result.content_type == "application/pdf"
    assert result.encoding is None


def test_pdf_is_detected_by_magic_not_by_name() -> None:
    assert extract(make_pdf(["Hello arena"]), name="talk.txt").content_type == "application/pdf"


def test_pdf_pages_are_all_read_under_the_limit() -> None:
    text = extract(make_pdf(["Page one", "Page two", "Page three"])).text
    assert text == "Page one\n\nPage two\n\nPage three"


def test_pdf_pages_past_the_limit_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_PDF_PAGES", 2)
    text = extract(make_pdf(["Page one", "Page two", "Page three"])).text
    assert "Page two" in text
    assert "Page three" not in text


def test_pdf_with_more_than_max_pages_reads_only_max_pages() -> None:
    pdf = make_pdf([f"Marker {i:04d}" for i in range(1, MAX_PDF_PAGES + 2)])
    text = extract(pdf, max_bytes=10 * MB).text
    assert f"Marker {MAX_PDF_PAGES:04d}" in text
    assert f"Marker {MAX_PDF_PAGES + 1:04d}" not in text


def test_pdf_text_is_cut_at_max_chars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_PDF_CHARS", 12)
    text = extract(make_pdf(["Page one", "Page two", "Page three"])).text
    assert text == "Page one\n\nPa"


def test_pdf_time_budget_stops_between_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "PDF_TIME_BUDGET_SECONDS", 0)
    assert extract(make_pdf(["Page one", "Page two"])).text == "Page one"


def test_pdf_limits_have_the_documented_values() -> None:
    assert (MAX_PDF_PAGES, MAX_PDF_CHARS, PDF_TIME_BUDGET_SECONDS) == (200, 500_000, 10)


def test_truncated_pdf_is_rejected() -> None:
    pdf = make_pdf(["Hello arena"])
    error = rejection(pdf[: len(pdf) // 3])
    assert (error.status, error.reason) == (400, "The PDF could not be read.")


def test_garbage_pdf_is_rejected_as_unreadable() -> None:
    error = rejection(b"%PDF-1.7\n" + random.Random(3).randbytes(2000))
    assert error.status == 400
    assert error.reason == "The PDF could not be read."


def test_any_pypdf_failure_becomes_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("pathological page tree")

    monkeypatch.setattr(documents, "PdfReader", explode)
    with pytest.raises(DocumentRejected) as info:
        documents._extract_pdf_text(make_pdf(["Hello arena"]), max_pages=10, max_chars=100, time_budget=5)
    assert (info.value.status, info.value.reason) == (400, "The PDF could not be read.")


def test_a_pdf_that_takes_too_long_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse runs in a child process; past the hard timeout it is killed, whatever it is doing."""
    monkeypatch.setattr(documents, "PDF_HARD_TIMEOUT_SECONDS", 0.001)
    error = rejection(make_pdf(["Hello arena"]))
    assert (error.status, error.reason) == (400, documents._PDF_TOO_SLOW)


def test_password_protected_pdf_is_rejected() -> None:
    error = rejection(encrypted_copy(make_pdf(["Hello arena"]), user_password="secret"))
    assert error.status == 400
    assert "password" in error.reason


def test_pdf_encrypted_without_a_user_password_is_read() -> None:
    """Permission-only encryption opens in any viewer without a password, so it is not a barrier."""
    assert extract(encrypted_copy(make_pdf(["Hello arena"]), user_password="")).text == "Hello arena"


def test_pdf_without_text_is_rejected_as_scanned() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    error = rejection(buffer.getvalue())
    assert error.status == 400
    assert "no extractable text" in error.reason


# --- Display names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\evil\\x.txt", "x.txt"),
        ("report.pdf", "report.pdf"),
        ("re\x00po\x1brt\x07.txt", "report.txt"),
        ("  my \t notes\n final .md ", "my notes final .md"),
        ("a\"b'c`d&e.txt", "abcde.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("folder/", "folder"),
        ("", "document.txt"),
        ("..", "document.txt"),
        ("<>", "document.txt"),
        ("\x00\x01\x02", "document.txt"),
    ],
)
def test_safe_display_name(name: str, expected: str) -> None:
    assert safe_display_name(name) == expected


def test_safe_display_name_strips_markup() -> None:
    result = safe_display_name("<script>alert(1)</script>.md")
    assert "<" not in result
    assert ">" not in result
    assert result.endswith(".md")


def test_safe_display_name_trims_long_names_keeping_the_extension() -> None:
    result = safe_display_name("a" * 500 + ".md")
    assert len(result) <= 120
    assert result.endswith(".md")
    assert result.startswith("aaaa")


def test_safe_display_name_trims_long_names_without_extension() -> None:
    assert safe_display_name("b" * 500) == "b" * 120
