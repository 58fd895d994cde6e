"""RFC 9110 / RFC 9112 grammar as regular expressions over bytes.

Names follow the RFCs so the patterns can be read against them.  These are the
general rules; the parser's fast path (``_parser._FAST_HEAD``) is built from the
same pieces and only ever accepts a subset of what they accept.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: token = 1*tchar
TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + rb"+"

# RFC 9110 §5.5: field-vchar = VCHAR / obs-text; obs-fold is not accepted.
FIELD_VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_CONTENT = FIELD_VCHAR + rb"(?:[ \t]+" + FIELD_VCHAR + rb"|" + FIELD_VCHAR + rb")*"
# Leading/trailing OWS is stripped before the value is matched.
FIELD_VALUE = rb"(?:" + FIELD_CONTENT + rb")?"

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
HTTP_VERSION = rb"HTTP/(?P<major>[0-9])\.(?P<minor>[0-9])"
REQUEST_TARGET = rb"[\x21-\x7e]+"
REQUEST_LINE = rb"(?P<method>" + TOKEN + rb") (?P<target>" + REQUEST_TARGET + rb") " + HTTP_VERSION

# RFC 9112 §5.1: field-line = field-name ":" OWS field-value OWS
HEADER_LINE = rb"(?P<name>" + TOKEN + rb"):[ \t]*(?P<value>.*?)[ \t]*"

# RFC 9110 §8.6: Content-Length = 1*DIGIT (h11 allows at most 20 digits; so do we)
CONTENT_LENGTH = rb"[0-9]{1,20}"

# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF.  Extensions are ignored, but
# must not contain control characters.  BWS before CRLF is tolerated (as h11 does).
CHUNK_SIZE = rb"(?P<size>[0-9A-Fa-f]{1,20})"
CHUNK_EXT = rb"(?:;[\t\x20-\x7e\x80-\xff]*)?"
CHUNK_HEADER = CHUNK_SIZE + rb"[ \t]*" + CHUNK_EXT

# RFC 3986 §3.2.2 host, RFC 9110 §7.2: Host = uri-host [ ":" port ]
_IP_LITERAL = rb"\[[0-9A-Za-z:.\-_~!$&'()*+,;=%]+\]"
_REG_NAME = rb"[0-9A-Za-z\-._~!$&'()*+,;=%]*"
HOST = rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")(?::[0-9]*)?"

# RFC 3986 §3.1 scheme, for absolute-form targets.
SCHEME = rb"[A-Za-z][A-Za-z0-9+\-.]*"

token_re = re.compile(TOKEN)
request_line_re = re.compile(REQUEST_LINE)
header_line_re = re.compile(HEADER_LINE)
field_value_re = re.compile(FIELD_VALUE)
content_length_re = re.compile(CONTENT_LENGTH)
chunk_header_re = re.compile(CHUNK_HEADER)
host_re = re.compile(HOST)
absolute_target_re = re.compile(
    rb"(?P<scheme>" + SCHEME + rb")://(?P<authority>[^/?#]*)(?P<rest>[/?][\x21-\x7e]*)?"
)
