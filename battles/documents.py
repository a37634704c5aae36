"""Turn an uploaded file's bytes into plain text, or explain in one sentence why not.

Kept free of Django (as `battles.exceptions` is) so the rules for what counts as a document can be
tested, and reused, on their own: views only map `DocumentRejected` onto a response and store
`ExtractedText`.
"""

from __future__ import annotations

import codecs
import io
import json
import posixpath
import re
import resource
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
from pypdf import PasswordType, PdfReader

from battles.exceptions import DocumentRejected

__all__ = [
    "MAX_PDF_CHARS",
    "MAX_PDF_PAGES",
    "PDF_TIME_BUDGET_SECONDS",
    "DocumentRejected",
    "ExtractedText",
    "extract_text",
    "safe_display_name",
]

# Pages past this are ignored: parsing runs on the request, so the work per upload must be bounded, and
# 200 pages is already far more text than a debate can use.
MAX_PDF_PAGES = 200
# Text past this is cut off (roughly 80k words), so one dense PDF cannot become an unbounded prompt.
MAX_PDF_CHARS = 500_000
# Wall-clock seconds of PDF parsing per upload, checked between pages, so a hostile or pathological PDF
# cannot hold a worker for minutes. The first page is always read, and a single page can overrun it.
PDF_TIME_BUDGET_SECONDS = 10
# The parse runs in a child process that is killed past this, whatever pypdf is doing.
PDF_HARD_TIMEOUT_SECONDS = 20
# Address space the child process may use: a PDF bomb fails there instead of exhausting the server.
PDF_MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
_PDF_TOO_SLOW = "The PDF took too long to read; save it as plain text and upload that."

# Shown when a display name sanitises down to nothing, so the UI always has something to call the file.
FALLBACK_DISPLAY_NAME = "document.txt"
# Display names longer than this break table layouts and say nothing more to a reader.
MAX_DISPLAY_NAME_CHARS = 120
# A longer "extension" is part of the name rather than a file type, so it is not worth preserving.
_MAX_EXTENSION_CHARS = 16
# Quotes, angle brackets, backtick and ampersand are what markup and shell injection need; a file name
# never does.
_MARKUP_CHARS = frozenset("<>\"'`&")
# Unicode categories removed from display names: controls, invisible format characters (including the
# right-to-left override used to disguise extensions) and lone surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

# Control characters that do not occur in real text. Tab, newline, vertical tab, form feed and carriage
# return do, so they are allowed.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Above this share of control characters, decoded bytes are binary data that happened to decode, not text.
_MAX_CONTROL_RATIO = 0.02

# Byte order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"

# Windows-1252 is what nearly every non-UTF-8 upload actually is (Notepad, Excel CSV exports, Word's
# "plain text"), but charset_normalizer 3.5 often ranks a sibling code page (cp1250, cp1257) first on
# Western European text and returns wrong accented letters. cp1252 wins when it scores within these
# margins of the winner. Tuned on sample paragraphs in 22 languages: fixes French, Portuguese, Italian,
# Dutch, Danish and English with accents; keeps Czech, Polish, Slovak, Croatian, Romanian, Turkish, Greek,
# Cyrillic and CJK. Hungarian ő/ű come out as õ/û (the bytes alone cannot tell), and Lithuanian cp1257 is
# misread by charset_normalizer itself.
_WESTERN_ENCODING = "cp1252"
_WESTERN_CHAOS_MARGIN = 0.05
_WESTERN_COHERENCE_MARGIN = 0.03

_PDF_MAGIC = b"%PDF-"

# How a rejected file should be redone: document formats can be re-saved, everything else replaced.
_SAVE_AS = "save it as PDF or plain text"
_UPLOAD_INSTEAD = "upload a PDF or a plain-text file instead"

# (offset, magic bytes, what the file is, what to do instead) for formats with an unambiguous signature,
# so the rejection can name what the user uploaded rather than just calling it binary.
_SIGNATURES: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG images", _UPLOAD_INSTEAD),
    (0, b"\xff\xd8\xff", "JPEG images", _UPLOAD_INSTEAD),
    (0, b"GIF87a", "GIF images", _UPLOAD_INSTEAD),
    (0, b"GIF89a", "GIF images", _UPLOAD_INSTEAD),
    (0, b"II*\x00", "TIFF images", _UPLOAD_INSTEAD),
    (0, b"MM\x00*", "TIFF images", _UPLOAD_INSTEAD),
    (0, b"\x00\x00\x01\x00", "Icon files (.ico)", _UPLOAD_INSTEAD),
    (0, b"8BPS\x00\x01", "Photoshop files (.psd)", _UPLOAD_INSTEAD),
    (0, b"{\\rtf", "Rich Text files (.rtf)", _SAVE_AS),
    (0, b"\x1f\x8b", "gzip archives", _UPLOAD_INSTEAD),
    (0, b"\xfd7zXZ\x00", "xz archives", _UPLOAD_INSTEAD),
    (0, b"7z\xbc\xaf\x27\x1c", "7-Zip archives", _UPLOAD_INSTEAD),
    (0, b"Rar!\x1a\x07", "RAR archives", _UPLOAD_INSTEAD),
    (0, b"\x28\xb5\x2f\xfd", "Zstandard archives", _UPLOAD_INSTEAD),
    (257, b"ustar", "tar archives", _UPLOAD_INSTEAD),
    (0, b"\x7fELF", "ELF executables", _UPLOAD_INSTEAD),
    (0, b"\xfe\xed\xfa\xce", "Mach-O executables", _UPLOAD_INSTEAD),
    (0, b"\xfe\xed\xfa\xcf", "Mach-O executables", _UPLOAD_INSTEAD),
    (0, b"\xce\xfa\xed\xfe", "Mach-O executables", _UPLOAD_INSTEAD),
    (0, b"\xcf\xfa\xed\xfe", "Mach-O executables", _UPLOAD_INSTEAD),
    (0, b"\xca\xfe\xba\xbe", "Compiled programs (Java classes, Mach-O)", _UPLOAD_INSTEAD),
    (0, b"\x00asm", "WebAssembly modules", _UPLOAD_INSTEAD),
    (0, b"SQLite format 3\x00", "SQLite databases", _UPLOAD_INSTEAD),
    (0, b"OggS\x00", "Ogg audio files", _UPLOAD_INSTEAD),
    (0, b"fLaC", "FLAC audio files", _UPLOAD_INSTEAD),
    (0, b"wOFF", "Font files", _UPLOAD_INSTEAD),
    (0, b"wOF2", "Font files", _UPLOAD_INSTEAD),
    (0, b"OTTO\x00", "Font files", _UPLOAD_INSTEAD),
    (0, b"\x00\x01\x00\x00\x00", "Font files", _UPLOAD_INSTEAD),
)

# ZIP-based formats, told apart by a member name (or, for OpenDocument and EPUB, the stored "mimetype"
# member) that appears verbatim in the archive's headers.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_ODF_MIMETYPE = b"mimetypeapplication/vnd.oasis.opendocument."
_ZIP_KINDS: tuple[tuple[bytes, str, str], ...] = (
    (b"word/document.xml", "Word documents (.docx)", _SAVE_AS),
    (b"xl/workbook.xml", "Excel spreadsheets (.xlsx)", "save it as CSV or PDF"),
    (b"ppt/presentation.xml", "PowerPoint presentations (.pptx)", "save it as PDF"),
    (_ODF_MIMETYPE + b"text", "OpenDocument text files (.odt)", _SAVE_AS),
    (_ODF_MIMETYPE + b"spreadsheet", "OpenDocument spreadsheets (.ods)", _SAVE_AS),
    (_ODF_MIMETYPE + b"presentation", "OpenDocument presentations (.odp)", _SAVE_AS),
    (b"mimetypeapplication/epub+zip", "EPUB e-books", _SAVE_AS),
)
# Old Office files share one container signature (OLE2); the extension is the only cheap way to say which.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_DEFAULT_KIND = "Older Microsoft Office files (.doc, .xls, .ppt)"
_OLE_KINDS = {
    ".doc": "Word documents (.doc)",
    ".xls": "Excel spreadsheets (.xls)",
    ".ppt": "PowerPoint presentations (.ppt)",
    ".msg": "Outlook messages (.msg)",
}
# HEIF-family brands in an ISO media "ftyp" box; every other brand is audio or video.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"mif1", b"msf1"})

# Content types by extension for text uploads. HTML and scripts are data here: stored and shown as escaped
# text, never rendered or run, so naming them precisely is safe. Any other text is text/plain.
_CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".py": "text/x-python",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".ts": "text/x-typescript",
    ".tsx": "text/x-typescript",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".xml": "application/xml",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".sql": "application/sql",
}
_DEFAULT_CONTENT_TYPE = "text/plain"


@dataclass(frozen=True)
class ExtractedText:
    """A document's text plus what it was, so the caller can store both without re-sniffing."""

    text: str  # normalised to \n line endings, NUL-free
    content_type: str  # "text/plain", "text/markdown", "application/pdf", ...
    encoding: str | None  # detected text encoding ("utf-8", "utf-16", "cp1252", ...); None for PDF


def safe_display_name(name: str) -> str:
    """Reduce a client-supplied file name to a bare, safe display name.

    Browsers send whatever they like (full Windows paths, markup, control characters), and the name ends up
    in HTML and logs. The result is only ever displayed, never used as a path.
    """
    base = _basename(name)
    base = "".join(" " if ch.isspace() else ch for ch in unicodedata.normalize("NFC", base))
    base = "".join(
        ch for ch in base if ch not in _MARKUP_CHARS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
    )
    base = " ".join(base.split())
    if not base.strip("."):
        return FALLBACK_DISPLAY_NAME
    if len(base) <= MAX_DISPLAY_NAME_CHARS:
        return base
    stem, ext = posixpath.splitext(base)
    if not ext or len(ext) > _MAX_EXTENSION_CHARS:
        return base[:MAX_DISPLAY_NAME_CHARS].rstrip()
    return stem[: MAX_DISPLAY_NAME_CHARS - len(ext)].rstrip() + ext


def extract_text(data: bytes, *, name: str, max_bytes: int) -> ExtractedText:
    """Return the text of an uploaded text or PDF file, or raise DocumentRejected saying why not.

    Every failure, including a malformed PDF, becomes a DocumentRejected so a view can always answer 4xx
    instead of 500.
    """
    if not data:
        raise DocumentRejected("The file is empty.")
    if len(data) > max_bytes:
        raise DocumentRejected(_too_large_reason(len(data), max_bytes), status=413)
    if data.startswith(_PDF_MAGIC):
        return ExtractedText(text=_extract_pdf(data), content_type="application/pdf", encoding=None)
    extension = _extension(name)
    known_binary = _identify_binary(data, extension)
    if known_binary is not None:
        raise DocumentRejected(known_binary)
    text, encoding = _decode(data)
    text = _normalise(text)
    if not text.strip():
        raise DocumentRejected("The file contains only whitespace.")
    return ExtractedText(
        text=text, content_type=_CONTENT_TYPES.get(extension, _DEFAULT_CONTENT_TYPE), encoding=encoding
    )


def _basename(name: str) -> str:
    """Last path component under either separator, since Windows browsers may send C:\\dir\\file.txt."""
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".", "..")]
    return parts[-1] if parts else ""


def _extension(name: str) -> str:
    """Lower-case extension with its dot, or "" — the only part of a client's file name we trust at all."""
    return posixpath.splitext(_basename(name))[1].lower()


def _human_size(size: int) -> str:
    """Format a byte count the way users read file sizes (binary units, at most one decimal)."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            number = f"{size / factor:.1f}".removesuffix(".0")
            return f"{number} {unit}"
    return f"{size} bytes"


def _too_large_reason(size: int, max_bytes: int) -> str:
    """Say how big the file is against the limit, without the rounding ever claiming they are equal."""
    actual, limit = _human_size(size), _human_size(max_bytes)
    if actual == limit:
        actual = f"just over {limit}"
    return f"The file is {actual}; the limit is {limit}."


def _identify_binary(data: bytes, extension: str) -> str | None:
    """Name a known binary format from its magic bytes, so the rejection tells the user what they sent."""
    for offset, magic, what, advice in _SIGNATURES:
        if data.startswith(magic, offset):
            return f"{what} are not supported; {advice}."
    if data.startswith(_OLE_MAGIC):
        return f"{_OLE_KINDS.get(extension, _OLE_DEFAULT_KIND)} are not supported; {_SAVE_AS}."
    if data.startswith(_ZIP_MAGICS):
        for marker, what, advice in _ZIP_KINDS:
            if marker in data:
                return f"{what} are not supported; {advice}."
        return f"ZIP archives are not supported; {_UPLOAD_INSTEAD}."
    media = _identify_media(data)
    if media is not None:
        return f"{media} are not supported; {_UPLOAD_INSTEAD}."
    return None


def _identify_media(data: bytes) -> str | None:
    """Recognise container formats whose signature needs more than a fixed prefix."""
    if data.startswith(b"RIFF"):
        form = data[8:12]
        return {b"WEBP": "WebP images", b"WAVE": "WAV audio files", b"AVI ": "AVI videos"}.get(
            form, "RIFF media files"
        )
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC images"
        if brand == b"avif":
            return "AVIF images"
        return "Video and audio files (MP4, MOV, M4A)"
    # "MZ" alone could start a text file; a real DOS/PE header has NUL bytes right after it.
    if data.startswith(b"MZ") and b"\x00" in data[2:64]:
        return "Windows programs (.exe, .dll)"
    if data.startswith(b"BZh") and data[4:10] == b"1AY&SY":
        return "bzip2 archives"
    # An ID3v2 tag: "ID3", a major version of 2-4, then a zero revision byte.
    if data.startswith(b"ID3") and len(data) > 4 and data[3] in (2, 3, 4) and data[4] == 0:
        return "MP3 audio files"
    if data.startswith(b"BM") and len(data) >= 26 and data[6:10] == b"\x00\x00\x00\x00":
        return "BMP images"
    return None


def _decode(data: bytes) -> tuple[str, str]:
    """Decode text bytes, trusting a byte order mark, then UTF-8, then charset_normalizer's best guess."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked_text(data.decode(encoding)), encoding
            except UnicodeDecodeError as exc:
                raise DocumentRejected(
                    f"The file starts like {encoding.upper()} text but could not be decoded; "
                    "save it as UTF-8 and upload it again."
                ) from exc
    if data.startswith(_UTF8_BOM):
        try:
            return _checked_text(data.decode("utf-8-sig")), "utf-8"
        except UnicodeDecodeError as exc:
            raise DocumentRejected(
                "The file is marked as UTF-8 but is not valid UTF-8; save it as UTF-8 and upload it again."
            ) from exc
    # Only UTF-16/32 text contains NUL bytes, and that was handled above.
    if b"\x00" in data:
        raise DocumentRejected(_not_text_reason())
    try:
        return _checked_text(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    return _decode_legacy(data)


def _decode_legacy(data: bytes) -> tuple[str, str]:
    """Decode non-UTF-8 text via charset_normalizer, preferring cp1252 when it is about as plausible."""
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise DocumentRejected(
            "The file's text encoding could not be recognised; save it as UTF-8 and upload it again."
        )
    text, encoding = str(best), best.encoding
    if _WESTERN_ENCODING in best.could_be_from_charset:
        # Several code pages gave this exact text; name the one the file most likely used.
        encoding = _WESTERN_ENCODING
    elif len(text) == len(data):
        # Only single-byte code pages map every byte to one character; CJK and the like are left alone.
        western = charset_normalizer.from_bytes(data, cp_isolation=[_WESTERN_ENCODING]).best()
        if (
            western is not None
            and western.chaos <= best.chaos + _WESTERN_CHAOS_MARGIN
            and western.coherence >= best.coherence - _WESTERN_COHERENCE_MARGIN
        ):
            text, encoding = str(western), _WESTERN_ENCODING
    return _checked_text(text), _canonical_encoding(encoding)


def _canonical_encoding(encoding: str) -> str:
    """Python's canonical codec name ("latin_1" -> "iso8859-1"), so stored names have one spelling."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


def _checked_text(text: str) -> str:
    """Reject decoded bytes that are mostly control characters: binary data that happened to decode."""
    if text and len(_CONTROL_RE.findall(text)) > _MAX_CONTROL_RATIO * len(text):
        raise DocumentRejected(_not_text_reason())
    return text


def _not_text_reason() -> str:
    """The one message for binary content we cannot name."""
    return f"The file is not text and not a PDF; {_UPLOAD_INSTEAD}."


def _normalise(text: str) -> str:
    """Give every document \\n line endings and no NULs or BOM, so downstream code has one shape to handle."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.removeprefix("\ufeff")


def _extract_pdf(data: bytes) -> str:
    """Extract a PDF's text in a child process, killed past PDF_HARD_TIMEOUT_SECONDS.

    pypdf is pure Python and a hostile PDF can make one page take minutes or gigabytes; only a separate
    process can be stopped whatever it is doing. The child also caps its own memory.
    """
    limits = json.dumps([MAX_PDF_PAGES, MAX_PDF_CHARS, PDF_TIME_BUDGET_SECONDS])
    try:
        result = subprocess.run(
            [sys.executable, "-m", "battles.documents", limits],
            input=data,
            capture_output=True,
            timeout=PDF_HARD_TIMEOUT_SECONDS,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise DocumentRejected(_PDF_TOO_SLOW) from exc
    try:
        reply = json.loads(result.stdout)
    except ValueError:
        reply = {}
    if result.returncode != 0 or not isinstance(reply, dict) or not ("text" in reply or "error" in reply):
        raise DocumentRejected("The PDF could not be read.")  # crashed, or ran out of memory
    if "error" in reply:
        raise DocumentRejected(str(reply["error"]))
    return str(reply["text"])


def _pdf_child() -> None:
    """The child process: limits as JSON in argv, the PDF on stdin, {"text"} or {"error"} on stdout."""
    max_pages, max_chars, time_budget = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (PDF_MEMORY_LIMIT_BYTES, PDF_MEMORY_LIMIT_BYTES))
    data = sys.stdin.buffer.read()
    try:
        reply = {
            "text": _extract_pdf_text(data, max_pages=max_pages, max_chars=max_chars, time_budget=time_budget)
        }
    except DocumentRejected as exc:
        reply = {"error": exc.reason}
    sys.stdout.write(json.dumps(reply))


def _extract_pdf_text(data: bytes, *, max_pages: int, max_chars: int, time_budget: float) -> str:
    """Extract a PDF's text within the page, character and time limits; never let a pypdf error escape."""
    MAX_PDF_PAGES, MAX_PDF_CHARS, PDF_TIME_BUDGET_SECONDS = max_pages, max_chars, time_budget  # noqa: N806
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise DocumentRejected("The PDF is password-protected; remove the password and upload it again.")
        deadline = time.monotonic() + PDF_TIME_BUDGET_SECONDS
        pages = reader.pages
        parts: list[str] = []
        total = 0
        timed_out = False
        for index in range(min(len(pages), MAX_PDF_PAGES)):
            if index and time.monotonic() >= deadline:
                timed_out = True
                break
            page_text = _normalise(pages[index].extract_text() or "").strip()
            if page_text:
                parts.append(page_text)
                total += len(page_text)
            if total >= MAX_PDF_CHARS:
                break
    except DocumentRejected:
        raise
    except Exception as exc:  # pypdf raises many types on malformed input; all mean the same to the user.
        raise DocumentRejected("The PDF could not be read.") from exc
    text = "\n\n".join(parts)[:MAX_PDF_CHARS]
    if not text.strip():
        if timed_out:
            raise DocumentRejected(_PDF_TOO_SLOW)
        raise DocumentRejected(
            "The PDF has no extractable text (it may be a scanned image); "
            "upload a PDF with selectable text or a plain-text file."
        )
    return text


if __name__ == "__main__":
    _pdf_child()
