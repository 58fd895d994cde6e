"""The form parser (``peregrine_rt._forms``) against bodies made by known encoders.

urlencoded bodies come from ``urllib.parse.urlencode`` and are checked against
``urllib.parse.parse_qsl`` (the same WHATWG-style decoding: ``+`` is a space,
an invalid ``%`` escape stays as it is).  Multipart bodies come from the
standard library's MIME writer (``email``) and from an encoder written here
the way browsers encode (HTML's multipart/form-data encoding algorithm).
Every body is also fed in every two-piece split and one byte at a time: the
parser streams, so the pieces must not matter.
"""

from __future__ import annotations

import gc
import io
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from email.encoders import encode_noop
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.policy import HTTP
from typing import Any, cast

import pytest
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from peregrine_rt import Config, Headers
from peregrine_rt._forms import (
    MAX_FIELD_SIZE,
    MAX_FILENAME_BYTES,
    MAX_PART_HEADER_SIZE,
    MAX_PART_HEADERS,
    FormData,
    FormLimits,
    UploadFile,
    parse_form,
    read_form,
    safe_filename,
)
from peregrine_rt.exceptions import HTTPError

URLENCODED = "application/x-www-form-urlencoded"
BOUNDARY = "----peregrineBoundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

File = tuple[str, bytes, str]  # (filename, content, content type)
Field = tuple[str, "str | File"]


# -- encoders ------------------------------------------------------------------------


def browser_multipart(fields: Sequence[Field], boundary: str = BOUNDARY) -> bytes:
    """Encode as browsers do: UTF-8 names, ``"`` CR LF escaped as %22 %0D %0A."""

    def quote(text: str) -> str:
        return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, str):
            out.write(f'Content-Disposition: form-data; name="{quote(name)}"\r\n\r\n'.encode())
            out.write(value.encode())
        else:
            filename, content, content_type = value
            out.write(
                f'Content-Disposition: form-data; name="{quote(name)}"; '
                f'filename="{quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
            )
            out.write(content)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def email_multipart(fields: Sequence[Field], boundary: str = BOUNDARY) -> bytes:
    """Encode with the standard library's MIME writer (ASCII names only)."""
    message = MIMEMultipart("form-data", boundary=boundary)
    for name, value in fields:
        if isinstance(value, str):
            part = MIMEApplication(value.encode(), "octet-stream", encode_noop)
            del part["Content-Type"]
            part.add_header("Content-Disposition", "form-data", name=name)
        else:
            filename, content, content_type = value
            _, subtype = content_type.split("/")
            part = MIMEApplication(content, subtype, encode_noop)
            part.replace_header("Content-Type", content_type)
            part.add_header("Content-Disposition", "form-data", name=name, filename=filename)
        del part["MIME-Version"]
        message.attach(part)
    data = message.as_bytes(policy=HTTP)
    return data.split(b"\r\n\r\n", 1)[1]  # the body, without the message's own headers


async def pieces(body: bytes, sizes: Iterable[int] = ()) -> AsyncIterator[bytes]:
    """``body`` in pieces of the given sizes (the rest in one piece)."""
    at = 0
    for size in sizes:
        await trio.lowlevel.checkpoint()
        yield body[at : at + size]
        at += size
    if at < len(body):
        yield body[at:]


async def parse(
    body: bytes, content_type: str | None = MULTIPART, sizes: Iterable[int] = (), **limits: Any
) -> FormData:
    return await parse_form(content_type, pieces(body, sizes), FormLimits(**limits))


async def refused(
    body: bytes, content_type: str | None = MULTIPART, sizes: Iterable[int] = (), **limits: Any
) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await parse(body, content_type, sizes, **limits)
    return info.value


async def as_plain(form: FormData) -> list[tuple[str, Any]]:
    """The form's pairs, files as (filename, content, content type); closes the form."""
    out: list[tuple[str, Any]] = []
    with form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                content = await value.read()
                assert value.size == len(content)
                out.append((name, (value.raw_filename, content, value.content_type)))
            else:
                out.append((name, value))
    return out


SAMPLE: list[Field] = [
    ("user", "ada"),
    ("note", "line one\r\nline two -- with dashes\r\n--almost a boundary"),
    ("avatar", ("me.png", bytes(range(256)) * 4, "image/png")),
    ("user", "lovelace"),
    ("empty", ""),
    ("doc", ("notes.txt", b"", "text/plain")),
]


# -- urlencoded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", "1"), ("b", "two words"), ("a", "3")],
        [("q", "a&b=c+d%"), ("", "no name"), ("empty", "")],
        [("naïve", "café ☕ 𝄞"), ("x", "\r\n\t")],
    ],
)
async def test_urlencoded_round_trip(pairs: list[tuple[str, str]]) -> None:
    body = urllib.parse.urlencode(pairs).encode()
    form = await parse(body, URLENCODED, sizes=[3, 1, 5])
    assert form.multi_items() == pairs
    assert form[pairs[0][0]] == pairs[0][1]  # the first value of a repeated name


@given(st.text(alphabet="ab=&+%2F4e\u00e9 ", max_size=40))
async def test_urlencoded_decodes_as_parse_qsl(text: str) -> None:
    """Same pairs as the standard library, or a 400 exactly where it cannot decode."""
    body = text.encode()
    try:
        expected = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        error = await refused(body, URLENCODED)
        assert error.status == 400
        assert "not valid UTF-8" in error.detail
    else:
        assert (await parse(body, URLENCODED, sizes=[1] * len(body))).multi_items() == expected


async def test_urlencoded_invalid_percent_escapes_stay_as_they_are() -> None:
    form = await parse(b"a=%zz&b=100%&c=%4", URLENCODED)
    assert form.multi_items() == [("a", "%zz"), ("b", "100%"), ("c", "%4")]


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"ok=1&%FF=1", "a field name is not valid UTF-8"), (b"f=%C3", "field 'f' is not valid")],
)
async def test_urlencoded_bytes_not_utf8_give_400(body: bytes, detail: str) -> None:
    error = await refused(body, URLENCODED)
    assert (error.status, error.detail[: len(detail)]) == (400, detail)


async def test_urlencoded_charsets() -> None:
    latin = await parse(b"name=Ren%E9", f"{URLENCODED}; charset=ISO-8859-1")
    assert latin["name"] == "René"
    utf8 = await parse(b"name=Ren%C3%A9", f'{URLENCODED}; charset="utf-8"')
    assert utf8["name"] == "René"
    error = await refused(b"name=x", f"{URLENCODED}; charset=koi8-r")
    assert error.status == 415
    assert "unsupported charset 'koi8-r'" in error.detail


async def test_urlencoded_limits() -> None:
    body = b"&".join(b"f%d=x" % i for i in range(10))
    assert len(await parse(body, URLENCODED, max_fields=10)) == 10
    error = await refused(body, URLENCODED, max_fields=9)
    assert (error.status, error.detail) == (400, "too many fields (the limit is 9)")
    big = b"f=" + b"x" * (MAX_FIELD_SIZE - 1)
    assert len(cast(str, (await parse(big, URLENCODED, sizes=[4096] * 300))["f"])) + 1 == (
        MAX_FIELD_SIZE
    )
    assert (await refused(big + b"x", URLENCODED, sizes=[4096] * 300)).status == 413
    assert (await refused(b"f=12345", URLENCODED, max_part_size=5)).status == 413


async def test_empty_bodies_are_empty_forms() -> None:
    assert await parse(b"", URLENCODED) == FormData()
    assert len(await parse(b"", MULTIPART)) == 0


# -- the content type ----------------------------------------------------------------


async def test_other_content_types_get_415_without_reading_the_body() -> None:
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b"{}"

    for content_type in ("application/json", None, "multipart/mixed; boundary=x", "text/plain"):
        with pytest.raises(HTTPError) as info:
            await parse_form(content_type, body(), FormLimits())
        assert info.value.status == 415
        assert "expected a form (application/x-www-form-urlencoded or multipart/form-data" in (
            info.value.detail
        )
        assert info.value.headers["accept"] == f"{URLENCODED}, multipart/form-data"
    assert not read


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "b" * 201,
        'multipart/form-data; boundary="ends with a space "',
        "multipart/form-data; boundary=caf\u00e9",
    ],
)
async def test_missing_or_invalid_boundary_gives_400(content_type: str) -> None:
    error = await refused(browser_multipart([("a", "b")]), content_type)
    assert error.status == 400
    assert "boundary" in error.detail


async def test_boundary_parameter_is_case_insensitive_and_may_be_quoted() -> None:
    body = browser_multipart([("a", "b")], boundary="x y:z")
    assert (await parse(body, 'Multipart/Form-Data; Boundary="x y:z"'))["a"] == "b"


# -- multipart: what comes back --------------------------------------------------------


async def test_multipart_from_the_email_package() -> None:
    fields: list[Field] = [
        ("title", "hello"),
        ("data", ("report.csv", b"a,b\r\n1,2\r\n", "text/csv")),
        ("title", "again"),
    ]
    body = email_multipart(fields)
    assert await as_plain(await parse(body)) == fields


async def test_multipart_from_a_browser_encoder() -> None:
    form = await parse(browser_multipart(SAMPLE))
    assert form["user"] == "ada"
    assert form.getlist("user") == ["ada", "lovelace"]
    assert list(form) == ["user", "note", "avatar", "empty", "doc"]
    avatar = form["avatar"]
    assert isinstance(avatar, UploadFile)
    assert (avatar.filename, avatar.content_type, avatar.size) == ("me.png", "image/png", 1024)
    assert avatar.headers["content-type"] == "image/png"
    assert avatar.in_memory
    assert avatar.file.tell() == 0  # rewound
    assert await as_plain(form) == SAMPLE


async def test_multipart_at_every_split_point() -> None:
    body = browser_multipart([*SAMPLE[:3], ("last", "x")])
    whole = await as_plain(await parse(body))
    for at in range(1, len(body)):
        assert await as_plain(await parse(body, sizes=[at])) == whole, at
    assert await as_plain(await parse(body, sizes=[1] * len(body))) == whole


async def test_every_truncation_is_a_400() -> None:
    body = browser_multipart([("a", "1"), ("f", ("x.bin", b"\r\n--" * 8, "application/x"))])
    for end in range(1, len(body) - 2):  # the last CRLF is optional: the end is "--"
        error = await refused(body[:end])
        assert error.status == 400, end
        assert error.detail.startswith(("truncated multipart body", "malformed multipart")), end
    assert len(await parse(body[:-2])) == 2


async def test_preamble_is_refused_and_epilogue_ignored() -> None:
    body = browser_multipart([("a", "1")])
    assert (await parse(body + b"epilogue, ignored\r\n"))["a"] == "1"
    assert (await refused(b"a preamble\r\n" + body)).status == 400


async def test_part_defaults() -> None:
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="upload"; filename=""\r\n\r\n'
        f"\r\n--{BOUNDARY}--\r\n"
    ).encode()
    with await parse(body) as form:
        upload = form["upload"]
        assert isinstance(upload, UploadFile)  # a file input left empty
        assert (upload.filename, upload.size, upload.content_type) == (
            "",
            0,
            "application/octet-stream",
        )
        assert await upload.read() == b""


async def test_field_charsets() -> None:
    def part(headers: str, value: bytes) -> bytes:
        return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + value + b"\r\n"

    body = (
        part(
            'Content-Disposition: form-data; name="l"\r\nContent-Type: text/plain; charset=latin1',
            b"\xe9",
        )
        + part('Content-Disposition: form-data; name="u"', "é".encode())
        + f"--{BOUNDARY}--\r\n".encode()
    )
    assert (await parse(body)).multi_items() == [("l", "é"), ("u", "é")]
    assert (await parse(body.replace("é".encode(), b"\xe9"), MULTIPART + "; charset=latin-1"))[
        "u"
    ] == "é"


BAD_PARTS = [
    ("Content-Type: text/plain", "one Content-Disposition"),
    ('Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"', "one"),
    ('Content-Disposition: attachment; name="a"', "is not Content-Disposition: form-data"),
    ('Content-Disposition: form-data; filename="a"', "is not Content-Disposition: form-data"),
    ('Content-Disposition: form-data; name="\xff"', "a field name is not valid UTF-8"),
    ('Content-Disposition: form-data; name="f"; filename="\xff"', "the file name of 'f'"),
    (
        'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=koi8-r',
        "koi8",
    ),
    ('Content-Disposition: form-data; name="a"\r\nBad Header: x', "malformed multipart body"),
    ('Content-Disposition: form-data; name="a"\r\nX: y\rz', "malformed multipart body"),
    ('Content-Disposition: form-data; name="a"' + "\r\nX: y" * MAX_PART_HEADERS, "header count"),
    ('Content-Disposition: form-data; name="a"\r\nX: ' + "y" * MAX_PART_HEADER_SIZE, "header size"),
]


@pytest.mark.parametrize(("headers", "detail"), BAD_PARTS)
async def test_bad_part_headers_give_400(headers: str, detail: str) -> None:
    body = f"--{BOUNDARY}\r\n{headers}\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n".encode("latin-1")
    error = await refused(body)
    assert error.status == 400
    assert detail.lower() in error.detail.lower()


async def test_field_values_not_utf8_give_400() -> None:
    body = browser_multipart([("a", "x")]).replace(b"\r\n\r\nx", b"\r\n\r\n\xff")
    error = await refused(body)
    assert (error.status, error.detail) == (400, "field 'a' is not valid UTF-8")


# -- multipart: limits ---------------------------------------------------------------


async def test_field_and_file_counts() -> None:
    fields: list[Field] = [(f"f{i}", "x") for i in range(3)]
    files: list[Field] = [(f"u{i}", (f"{i}.txt", b"x", "text/plain")) for i in range(2)]
    body = browser_multipart(fields + files)
    assert len(await as_plain(await parse(body, max_fields=5, max_files=2))) == 5
    error = await refused(body, max_fields=4)
    assert (error.status, error.detail) == (400, "too many fields (the limit is 4)")
    error = await refused(body, max_files=1)
    assert (error.status, error.detail) == (400, "too many files (the limit is 1)")
    assert (await refused(body, max_files=0)).detail == "too many files (the limit is 0)"


async def test_part_size_limit() -> None:
    limit = 1000
    at_limit = browser_multipart([("f", ("a.bin", b"x" * limit, "application/x"))])
    assert (await as_plain(await parse(at_limit, max_part_size=limit)))[0][1][1] == b"x" * limit
    over = browser_multipart([("f", ("a.bin", b"x" * (limit + 1), "application/x"))])
    error = await refused(over, max_part_size=limit, sizes=[100] * 20)
    assert (error.status, error.detail) == (413, "file 'f' is over 1000 bytes")
    text = browser_multipart([("t", "y" * (limit + 1))])
    assert (await refused(text, max_part_size=limit)).detail == "field 't' is over 1000 bytes"


async def test_text_fields_are_capped_even_without_a_part_size() -> None:
    ok = browser_multipart([("t", "y" * MAX_FIELD_SIZE)])
    assert len(cast(str, (await parse(ok, sizes=[65536] * 17))["t"])) == MAX_FIELD_SIZE
    error = await refused(browser_multipart([("t", "y" * (MAX_FIELD_SIZE + 1))]))
    assert (error.status, error.detail) == (413, f"field 't' is over {MAX_FIELD_SIZE} bytes")


async def test_files_are_closed_when_the_body_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    original = tempfile.SpooledTemporaryFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("peregrine_rt._forms.SpooledTemporaryFile", spy)
    body = browser_multipart([("a", ("1.txt", b"one", "text/plain"))] + [("b", "x")] * 3)
    assert (await refused(body, max_fields=2)).status == 400
    assert len(made) == 1
    assert made[0].closed
    assert (await refused(body[:-30])).status == 400  # truncated after the file
    assert len(made) == 2
    assert made[1].closed


# -- spooling ------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "in_memory"), [(4096, True), (4097, False), (100_000, False)])
async def test_files_spool_to_disk_past_the_spool_size(size: int, in_memory: bool) -> None:
    content = os.urandom(size)
    body = browser_multipart([("f", ("big.bin", content, "application/octet-stream"))])
    with await parse(body, spool_size=4096, sizes=[1000] * 200) as form:
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        assert upload.in_memory is in_memory
        assert upload.size == size
        assert await upload.read(10) == content[:10]
        assert await upload.read() == content[10:]
        assert await upload.seek(5) == 5
        assert await upload.read(3) == content[5:8]
        if not in_memory:
            assert upload.file.fileno() >= 0  # a real (unlinked) temporary file


# -- FormData and UploadFile ---------------------------------------------------------


async def test_formdata_is_an_immutable_multidict() -> None:
    upload = UploadFile(io.BytesIO(b"abc"), filename="../a.txt")
    form = FormData([("a", "1"), ("f", upload), ("a", "2")])
    assert (form["a"], form.get("zz"), len(form), list(form)) == ("1", None, 2, ["a", "f"])
    assert form.getlist("a") == ["1", "2"]
    assert form.getlist("zz") == []
    assert form.multi_items() == [("a", "1"), ("f", upload), ("a", "2")]
    assert form == {"a": "1", "f": upload}
    assert "UploadFile(filename='a.txt', size=3" in repr(form)
    with pytest.raises(TypeError):
        form["a"] = "3"  # type: ignore[index]  # no item assignment: that is the point
    assert (upload.size, upload.raw_filename, upload.filename) == (3, "../a.txt", "a.txt")
    assert upload.in_memory
    assert await upload.read() == b"abc"


async def test_closing() -> None:
    upload = UploadFile(io.BytesIO(b"abc"))
    form = FormData([("f", upload)])
    with form:
        assert not upload.file.closed
    assert upload.file.closed
    form.close()  # again: nothing happens
    await form.aclose()
    other = UploadFile(io.BytesIO(b"x"))
    await other.close()
    await other.close()
    assert other.file.closed


async def test_an_unclosed_form_frees_its_files_when_collected() -> None:
    body = browser_multipart([("f", ("big.bin", b"x" * 5000, "application/x"))])
    form = await parse(body, spool_size=1000)
    upload = form["f"]
    assert isinstance(upload, UploadFile)
    file = upload.file
    assert not upload.in_memory
    del form, upload
    gc.collect()  # filterwarnings=error: a ResourceWarning here would fail the test
    assert file.closed


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\notes.txt", "notes.txt"),
        ("dir/..", ""),
        ("..", ""),
        (".htaccess", "htaccess"),
        ("a\x00b\r\n.txt", "ab.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # a right-to-left override
        ('a<b>:c"d|e?f*.txt', "a_b__c_d_e_f_.txt"),
        ("name. . ", "name"),
        ("CON", "_CON"),
        ("con.tar.gz", "_con.tar.gz"),
        ("COM1.txt", "_COM1.txt"),
        ("console.txt", "console.txt"),
        ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),
        ("  spaced name.txt", "spaced name.txt"),
    ],
)
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe


@given(st.text(max_size=400))
def test_safe_filename_is_always_one_short_component(raw: str) -> None:
    name = safe_filename(raw)
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    assert not set(name) & set('/\\\x00\r\n<>:"|?*')
    assert not name.startswith(".")
    assert name == safe_filename(name)  # already safe: left alone


def test_long_filenames_keep_their_extension() -> None:
    name = safe_filename("a" * 300 + ".txt")
    assert (len(name.encode()), name[-5:]) == (MAX_FILENAME_BYTES, "a.txt")
    accented = safe_filename("é" * 200 + ".jpeg")
    assert len(accented.encode()) <= MAX_FILENAME_BYTES
    assert accented.endswith("é.jpeg")


# -- hypothesis: round trips and garbage -------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters='"\\\r\n'), max_size=12)
files = st.tuples(names, st.binary(max_size=300), st.sampled_from(["text/plain", "image/png"]))
form_fields = st.lists(st.tuples(names, st.one_of(st.text(max_size=50), files)), max_size=6)
splits = st.lists(st.integers(min_value=1, max_value=40), max_size=30)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(form_fields, splits, st.sampled_from([16, 100_000]))
async def test_multipart_round_trip(fields: list[Field], sizes: list[int], spool: int) -> None:
    assume(all(BOUNDARY not in (v if isinstance(v, str) else repr(v[1])) for _, v in fields))
    body = browser_multipart(fields)
    form = await parse(body, sizes=sizes, spool_size=spool)
    assert await as_plain(form) == fields


def mutate(body: bytes, where: int, what: int, how: str) -> bytes:
    where %= max(len(body), 1)
    if how == "flip":
        return body[:where] + bytes([body[where] ^ (what or 1)]) + body[where + 1 :]
    if how == "insert":
        return body[:where] + bytes([what]) + body[where:]
    return body[:where] + body[where + 1 :]


@given(
    form_fields,
    st.lists(
        st.tuples(
            st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["flip", "insert", "cut"])
        ),
        min_size=1,
        max_size=4,
    ),
    splits,
)
async def test_damaged_bodies_give_a_form_or_a_4xx(
    fields: list[Field], damage: list[tuple[int, int, str]], sizes: list[int]
) -> None:
    body = browser_multipart(fields)
    for where, what, how in damage:
        body = mutate(body, where, what, how)
    await form_or_4xx(body, MULTIPART, sizes)


@given(
    st.binary(max_size=200),
    st.sampled_from([MULTIPART, "multipart/form-data; boundary=a", URLENCODED]),
)
async def test_garbage_gives_a_form_or_a_4xx(body: bytes, content_type: str) -> None:
    await form_or_4xx(body, content_type, [7] * 30)


async def form_or_4xx(body: bytes, content_type: str, sizes: list[int]) -> None:
    try:
        form = await parse(body, content_type, sizes, max_fields=20, max_part_size=64)
    except HTTPError as exc:
        assert exc.status in (400, 413), exc
    else:
        await as_plain(form)


# -- read_form: the request side -----------------------------------------------------


class FakeRequest:
    """What read_form uses of a Request: headers, state, config, the body stream."""

    def __init__(self, body: bytes, content_type: str | None, **config: Any) -> None:
        raw = [(b"content-type", content_type.encode())] if content_type else []
        self.headers = Headers(raw)
        self.state: dict[str, Any] = {}
        self.config = Config(**config)
        self.content_length = len(body)
        self.chunked = False
        self.body = body
        self.streams = 0

    async def stream(self) -> AsyncIterator[bytes]:
        self.streams += 1
        for at in range(0, len(self.body), 5):
            await trio.lowlevel.checkpoint()
            yield self.body[at : at + 5]
        self.body = b""  # read once, as a real request's body


async def test_read_form_is_cached() -> None:
    request = FakeRequest(b"a=1", URLENCODED)
    form = await read_form(cast(Any, request))
    assert await read_form(cast(Any, request), max_fields=0) is form
    assert request.streams == 1
    assert form["a"] == "1"


async def test_read_form_repeats_its_error() -> None:
    request = FakeRequest(b"a=1&b=2", URLENCODED, form_max_fields=1)
    with pytest.raises(HTTPError) as first:
        await read_form(cast(Any, request))
    with pytest.raises(HTTPError) as second:
        await read_form(cast(Any, request))
    assert (second.value.status, second.value.detail) == (first.value.status, first.value.detail)
    assert request.streams == 1


async def test_read_form_limits_come_from_config_unless_given() -> None:
    body = browser_multipart(
        [("f", ("a", b"x" * 10, "text/plain")), ("g", ("b", b"y", "text/plain"))]
    )
    error = await refused_request(FakeRequest(body, MULTIPART, form_max_part_size=5))
    assert error.status == 413
    error = await refused_request(FakeRequest(body, MULTIPART, form_max_files=1))
    assert error.detail == "too many files (the limit is 1)"
    request = FakeRequest(body, MULTIPART, form_max_files=1, form_spool_size=4)
    with await read_form(cast(Any, request), max_files=2, max_part_size=10) as form:
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        assert not upload.in_memory  # form_spool_size=4


async def refused_request(request: FakeRequest) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await read_form(cast(Any, request))
    return info.value


async def test_no_content_type_and_no_body_is_an_empty_form() -> None:
    request = FakeRequest(b"", None)
    assert len(await read_form(cast(Any, request))) == 0
    assert request.streams == 0
    assert (await refused_request(FakeRequest(b"a=1", None))).status == 415
