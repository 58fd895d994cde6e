/*
 * peregrine_rt._http._speedups: the request parser's fast path, in C (and the
 * response writer's: encode_fixed_response, at the end).
 *
 * One function, scan_head(), does for a request head exactly what the pure
 * Python fast path (_parser._scan_head_py) does, byte for byte: it reads the
 * common request line (GET/POST/PUT/DELETE/HEAD/OPTIONS/PATCH, origin-form
 * target, HTTP/1.0 or 1.1, CRLF), then either recognises the header block as
 * the one the connection sent last time (the keep-alive cache) or checks every
 * header line against RFC 9112 / RFC 9110 while it notes the six fields that
 * decide framing and connection handling.
 *
 * It answers None whenever the head is not the common shape (an incomplete
 * head, bare LF, a control byte, a repeated or malformed special field, too
 * many lines, a head longer than the fast-path limit...).  None never means
 * "invalid": the Python general path then reads the head again, applies every
 * rule and raises the precise error.  So this file only has to be right about
 * what it accepts, and the tests compare it with the Python fast path on
 * generated and random input.
 *
 * Every read of the buffer is bounded by its length (and, for the header
 * block, by the fast-path limit): all index checks are written out next to
 * the reads.  No dependency beyond the CPython C API.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

/* Byte classes (one 256-entry table, filled once at import). */
enum {
    C_TCHAR = 1,   /* RFC 9110 §5.6.2 tchar */
    C_FIELD = 2,   /* field-value byte: HTAB, SP, VCHAR, obs-text (RFC 9110 §5.5) */
    C_TARGET = 4,  /* request-target byte after "/": VCHAR (0x21-0x7e) */
    C_REGNAME = 8, /* RFC 3986 reg-name: unreserved, sub-delims, "%" */
    C_IPLIT = 16,  /* inside "[...]" of a Host: reg-name bytes and ":" */
    C_WS = 32,     /* OWS: SP, HTAB */
    C_DIGIT = 64,  /* 0-9 */
};

static uint8_t ctab[256];
static uint8_t lower[256];

static void
init_tables(void)
{
    static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
    static const char reg_extra[] = "-._~!$&'()*+,;=%";
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        lower[c] = (uint8_t)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
            k |= C_FIELD;
        }
        if (c >= 0x21 && c <= 0x7e) {
            k |= C_TARGET;
        }
        if (alnum || (c != 0 && strchr(tchar_extra, c) != NULL)) {
            k |= C_TCHAR;
        }
        if (alnum || (c != 0 && strchr(reg_extra, c) != NULL)) {
            k |= C_REGNAME | C_IPLIT;
        }
        if (c == ':') {
            k |= C_IPLIT;
        }
        if (c == ' ' || c == '\t') {
            k |= C_WS;
        }
        if (c >= '0' && c <= '9') {
            k |= C_DIGIT;
        }
        ctab[c] = k;
    }
}

/* The methods the fast path knows, as the str objects the heads carry. */
static const char *const method_names[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};
#define N_METHODS 7
static PyObject *method_strs[N_METHODS];
static PyObject *kwnames_block; /* ("block",) for headers_class(block=...) */
static PyObject *version_11, *version_10;
static PyObject *headers_type;                   /* set by _set_headers_type() */
static PyObject *str_block, *str_raw, *str_index; /* its slots */

/* The special fields, as bits (a second occurrence sends the head to the general path). */
enum {
    F_HOST = 1,
    F_CONNECTION = 2,
    F_CONTENT_LENGTH = 4,
    F_TRANSFER_ENCODING = 8,
    F_UPGRADE = 16,
    F_EXPECT = 32,
};

/* Whether b[0:n] equals the lower-case ASCII word w (n == strlen(w)), ignoring case. */
static inline int
eq_lower(const uint8_t *b, Py_ssize_t n, const char *w)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lower[b[i]] != (uint8_t)w[i]) {
            return 0;
        }
    }
    return 1;
}

/* Which special field the name b[0:n] is (0 for any other name). */
static inline int
special_field(const uint8_t *b, Py_ssize_t n)
{
    switch (n) {
    case 4:
        return eq_lower(b, 4, "host") ? F_HOST : 0;
    case 6:
        return eq_lower(b, 6, "expect") ? F_EXPECT : 0;
    case 7:
        return eq_lower(b, 7, "upgrade") ? F_UPGRADE : 0;
    case 10:
        return eq_lower(b, 10, "connection") ? F_CONNECTION : 0;
    case 14:
        return eq_lower(b, 14, "content-length") ? F_CONTENT_LENGTH : 0;
    case 17:
        return eq_lower(b, 17, "transfer-encoding") ? F_TRANSFER_ENCODING : 0;
    default:
        return 0;
    }
}

/* The method at the start of b[0:n], with its SP: index into method_names, or -1. */
static int
match_method(const uint8_t *b, Py_ssize_t n, Py_ssize_t *after)
{
    for (int m = 0; m < N_METHODS; m++) {
        const char *name = method_names[m];
        Py_ssize_t len = (Py_ssize_t)strlen(name);
        if (n > len && b[0] == (uint8_t)name[0] && memcmp(b, name, (size_t)len) == 0 && b[len] == ' ') {
            *after = len + 1;
            return m;
        }
    }
    return -1;
}

/* Skip OWS forward from i (never past end). */
static inline Py_ssize_t
skip_ws(const uint8_t *b, Py_ssize_t i, Py_ssize_t end)
{
    while (i < end && (ctab[b[i]] & C_WS)) {
        i++;
    }
    return i;
}

/* Drop OWS backward from end (never before start). */
static inline Py_ssize_t
rstrip_ws(const uint8_t *b, Py_ssize_t start, Py_ssize_t end)
{
    while (end > start && (ctab[b[end - 1]] & C_WS)) {
        end--;
    }
    return end;
}

/* Whether the comma-separated list b[s:e] holds `word` (lower-case), each item
 * stripped of OWS and compared without case: _fields.connection_tokens and
 * _fields.expects_continue. */
static int
list_has(const uint8_t *b, Py_ssize_t s, Py_ssize_t e, const char *word)
{
    Py_ssize_t wlen = (Py_ssize_t)strlen(word);
    Py_ssize_t i = s;
    while (i <= e) {
        Py_ssize_t j = i;
        while (j < e && b[j] != ',') {
            j++;
        }
        Py_ssize_t ts = skip_ws(b, i, j);
        Py_ssize_t te = rstrip_ws(b, ts, j);
        if (te - ts == wlen && eq_lower(b + ts, wlen, word)) {
            return 1;
        }
        i = j + 1; /* past the comma (or past e: the loop ends) */
    }
    return 0;
}

/* Whether b[s:e] is a Host value the fast path takes (_parser._LHOST):
 * "[" 1*(reg-name / ":") "]" or *reg-name, then an optional ":" *DIGIT. */
static int
valid_host(const uint8_t *b, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t i = s;
    if (i < e && b[i] == '[') {
        i++;
        Py_ssize_t inner = i;
        while (i < e && (ctab[b[i]] & C_IPLIT)) {
            i++;
        }
        if (i == inner || i >= e || b[i] != ']') {
            return 0;
        }
        i++;
    }
    else {
        while (i < e && (ctab[b[i]] & C_REGNAME)) {
            i++;
        }
    }
    if (i < e && b[i] == ':') {
        i++;
        while (i < e && (ctab[b[i]] & C_DIGIT)) {
            i++;
        }
    }
    return i == e;
}

/* Where the value that starts at i ends: the index of its CR, or -1 if a byte
 * other than HTAB/SP/VCHAR/obs-text comes first, a CR is not followed by LF,
 * or `stop` comes first.  The hot loop of the whole parser. */
static inline Py_ssize_t
find_line_end(const uint8_t *b, Py_ssize_t i, Py_ssize_t stop)
{
#ifdef HAVE_SSE2
    /* Sixteen bytes a round while none is a control byte (0x00-0x1f) or DEL:
     * the first one found is usually the CR; HTAB goes on below. */
    const __m128i k1f = _mm_set1_epi8(0x1f);
    const __m128i k7f = _mm_set1_epi8(0x7f);
    while (i + 16 <= stop) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(v, k1f), k1f),
                                   _mm_cmpeq_epi8(v, k7f));
        int mask = _mm_movemask_epi8(bad);
        if (mask != 0) {
            i += __builtin_ctz((unsigned)mask);
            break;
        }
        i += 16;
    }
#endif
    /* Four bytes a round while they are all field bytes (and all present). */
    while (i + 4 <= stop && (ctab[b[i]] & ctab[b[i + 1]] & ctab[b[i + 2]] & ctab[b[i + 3]] & C_FIELD)) {
        i += 4;
    }
    while (i < stop && (ctab[b[i]] & C_FIELD)) {
        i++;
    }
    if (i + 1 < stop && b[i] == '\r' && b[i + 1] == '\n') {
        return i;
    }
    return -1;
}

static PyObject *
make_bytes_lower(const uint8_t *b, Py_ssize_t n)
{
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r == NULL) {
        return NULL;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(r);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = lower[b[i]];
    }
    return r;
}

/* int() of 1-20 ASCII digits, exact (a 20-digit value may exceed 64 bits). */
static PyObject *
make_int(const uint8_t *b, Py_ssize_t n)
{
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long d = (unsigned long long)(b[i] - '0');
        if (v > (ULLONG_MAX - d) / 10) {
            char text[32];
            memcpy(text, b, (size_t)n); /* n <= 20, checked by the caller */
            text[n] = '\0';
            return PyLong_FromString(text, NULL, 10);
        }
        v = v * 10 + d;
    }
    return PyLong_FromUnsignedLongLong(v);
}

/* headers_class(block=block).  For the Headers class itself, what its
 * __init__ does, without running Python code: an instance with _block set and
 * _raw and _index None (_headers.py says to keep the two in step, and
 * test_speedups compares every slot).  Any other class is called. */
static PyObject *
make_headers(PyObject *headers_class, PyObject *block)
{
    if (headers_class == headers_type) {
        PyTypeObject *tp = (PyTypeObject *)headers_class;
        PyObject *h = tp->tp_alloc(tp, 0);
        if (h == NULL) {
            return NULL;
        }
        if (PyObject_GenericSetAttr(h, str_block, block) < 0
            || PyObject_GenericSetAttr(h, str_raw, Py_None) < 0
            || PyObject_GenericSetAttr(h, str_index, Py_None) < 0) {
            Py_DECREF(h);
            return NULL;
        }
        return h;
    }
    PyObject *callargs[2] = {NULL, block};
    return PyObject_Vectorcall(headers_class, callargs + 1, 0 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                               kwnames_block);
}

PyDoc_STRVAR(set_headers_type_doc,
"_set_headers_type(cls, /)\n"
"--\n\n"
"Name the Headers class whose instances scan_head may build directly.");

static PyObject *
set_headers_type(PyObject *module, PyObject *cls)
{
    (void)module;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "_set_headers_type() needs a class");
        return NULL;
    }
    Py_XSETREF(headers_type, Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(scan_head_doc,
"scan_head(buf, limit, max_count, cache, headers_class, /)\n"
"--\n\n"
"Read a request head by the fast path; the same answers as _parser._scan_head_py.\n\n"
"Returns None (not the common shape: use the general path), or (end, method,\n"
"target, version, headers, host, keep_alive, content_length, chunked, upgrade,\n"
"expect_continue, info): end is the offset of the CR of the blank line; info\n"
"is what to keep as cache[1] for the next head, or None when the header block\n"
"was cache[0] byte for byte and cache[1] was used.");

static PyObject *
scan_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "scan_head() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *buf = args[0];
    PyObject *cache = args[3];
    PyObject *headers_class = args[4];
    if (!PyBytes_CheckExact(buf)) {
        PyErr_SetString(PyExc_TypeError, "scan_head() needs bytes");
        return NULL;
    }
    /* cache: None or (block, (host, close, keep, upgrade, clen, chunked, expect, headers)) */
    PyObject *cached = Py_None;
    PyObject *cached_info = NULL;
    if (cache != Py_None) {
        if (!PyTuple_CheckExact(cache) || PyTuple_GET_SIZE(cache) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(cache, 0))
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(cache, 1))
            || PyTuple_GET_SIZE(PyTuple_GET_ITEM(cache, 1)) != 8) {
            PyErr_SetString(PyExc_TypeError, "scan_head(): cache must be None or (bytes, 8-tuple)");
            return NULL;
        }
        cached = PyTuple_GET_ITEM(cache, 0);
        cached_info = PyTuple_GET_ITEM(cache, 1);
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t max_count = PyLong_AsSsize_t(args[2]);
    if (max_count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(buf);
    const Py_ssize_t n = PyBytes_GET_SIZE(buf);

    /* -- the request line: METHOD SP "/" *VCHAR SP "HTTP/1." ("0" / "1") CRLF -- */
    Py_ssize_t i = 0;
    int method = match_method(b, n, &i);
    if (method < 0 || i >= n || b[i] != '/') {
        Py_RETURN_NONE;
    }
    const Py_ssize_t target_start = i;
    i++;
    while (i < n && (ctab[b[i]] & C_TARGET)) {
        i++;
    }
    const Py_ssize_t target_end = i;
    if (n - i < 11 || memcmp(b + i, " HTTP/1.", 8) != 0 || (b[i + 8] != '0' && b[i + 8] != '1')
        || b[i + 9] != '\r' || b[i + 10] != '\n') {
        Py_RETURN_NONE;
    }
    const int http11 = b[i + 8] == '1';
    const Py_ssize_t start = i + 11; /* where the header block starts */
    if (start > limit) {
        Py_RETURN_NONE;
    }

    Py_ssize_t end = -1;
    PyObject *info = NULL; /* a new reference to the block info */
    int hit = 0;           /* info is cache[1] */

    /* -- the keep-alive cache: the same header block as last time -- */
    if (cached != Py_None) {
        Py_ssize_t clen = PyBytes_GET_SIZE(cached);
        if (clen <= n - start - 2 && memcmp(b + start, PyBytes_AS_STRING(cached), (size_t)clen) == 0
            && b[start + clen] == '\r' && b[start + clen + 1] == '\n' && start + clen + 2 <= limit) {
            end = start + clen;
            info = Py_NewRef(cached_info);
            hit = 1;
        }
    }

    /* -- the header block, line by line, within min(n, limit) -- */
    if (info == NULL) {
        const Py_ssize_t stop = n < limit ? n : limit;
        Py_ssize_t pos = start;
        Py_ssize_t count = 0;
        int seen = 0;
        Py_ssize_t host_s = 0, host_e = 0, conn_s = 0, conn_e = 0, upg_s = 0, upg_e = 0;
        Py_ssize_t exp_s = 0, exp_e = 0, cl_s = 0, cl_e = 0;
        for (;;) {
            if (pos >= stop) {
                Py_RETURN_NONE; /* incomplete, or longer than the fast-path limit */
            }
            if (b[pos] == '\r') {
                if (pos + 1 < stop && b[pos + 1] == '\n') {
                    break; /* the blank line */
                }
                Py_RETURN_NONE;
            }
            if (count >= max_count) {
                Py_RETURN_NONE;
            }
            /* field-name ":" -- no whitespace before the colon */
            const Py_ssize_t name_s = pos;
            while (pos < stop && (ctab[b[pos]] & C_TCHAR)) {
                pos++;
            }
            if (pos == name_s || pos >= stop || b[pos] != ':') {
                Py_RETURN_NONE;
            }
            const Py_ssize_t name_len = pos - name_s;
            const Py_ssize_t value_s = pos + 1;
            const Py_ssize_t value_e = find_line_end(b, value_s, stop);
            if (value_e < 0) {
                Py_RETURN_NONE;
            }
            pos = value_e + 2;
            count++;
            const int field = special_field(b + name_s, name_len);
            if (field == 0) {
                continue;
            }
            if (seen & field) {
                Py_RETURN_NONE; /* repeated: the general path merges or refuses */
            }
            seen |= field;
            const Py_ssize_t vs = skip_ws(b, value_s, value_e);
            switch (field) {
            case F_HOST: {
                Py_ssize_t he = vs;
                while (he < value_e && !(ctab[b[he]] & C_WS)) {
                    he++;
                }
                if (skip_ws(b, he, value_e) != value_e || !valid_host(b, vs, he)) {
                    Py_RETURN_NONE;
                }
                host_s = vs;
                host_e = he;
                break;
            }
            case F_CONTENT_LENGTH: {
                Py_ssize_t de = vs;
                while (de < value_e && (ctab[b[de]] & C_DIGIT)) {
                    de++;
                }
                if (de == vs || de - vs > 20 || skip_ws(b, de, value_e) != value_e) {
                    Py_RETURN_NONE;
                }
                cl_s = vs;
                cl_e = de;
                break;
            }
            case F_TRANSFER_ENCODING:
                if (value_e - vs < 7 || !eq_lower(b + vs, 7, "chunked")
                    || skip_ws(b, vs + 7, value_e) != value_e) {
                    Py_RETURN_NONE;
                }
                break;
            case F_CONNECTION:
                conn_s = vs;
                conn_e = value_e;
                break;
            case F_UPGRADE:
                upg_s = vs;
                upg_e = value_e;
                break;
            default: /* F_EXPECT */
                exp_s = vs;
                exp_e = value_e;
                break;
            }
        }
        end = pos;
        if ((seen & F_TRANSFER_ENCODING) && (seen & F_CONTENT_LENGTH)) {
            Py_RETURN_NONE; /* RFC 9112 §6.3: the general path refuses it */
        }
        int close = 0, keep = 0, upgrade_token = 0;
        if (seen & F_CONNECTION) {
            close = list_has(b, conn_s, conn_e, "close");
            keep = list_has(b, conn_s, conn_e, "keep-alive");
            upgrade_token = list_has(b, conn_s, conn_e, "upgrade");
        }
        int expect_continue = (seen & F_EXPECT) && list_has(b, exp_s, exp_e, "100-continue");

        PyObject *host = NULL, *upgrade = NULL, *clen = NULL, *block = NULL, *headers = NULL;
        if (seen & F_HOST) {
            host = make_bytes_lower(b + host_s, host_e - host_s);
        }
        else {
            host = Py_NewRef(Py_None);
        }
        if ((seen & F_UPGRADE) && upgrade_token) {
            upgrade = PyBytes_FromStringAndSize((const char *)b + upg_s,
                                                rstrip_ws(b, upg_s, upg_e) - upg_s);
        }
        else {
            upgrade = Py_NewRef(Py_None);
        }
        if (seen & F_CONTENT_LENGTH) {
            clen = make_int(b + cl_s, cl_e - cl_s);
        }
        else {
            clen = Py_NewRef(Py_None);
        }
        block = PyBytes_FromStringAndSize((const char *)b + start, end - start);
        if (block != NULL) {
            headers = make_headers(headers_class, block);
        }
        if (host != NULL && upgrade != NULL && clen != NULL && headers != NULL) {
            info = PyTuple_Pack(8, host, close ? Py_True : Py_False, keep ? Py_True : Py_False,
                                upgrade, clen, (seen & F_TRANSFER_ENCODING) ? Py_True : Py_False,
                                expect_continue ? Py_True : Py_False, headers);
        }
        Py_XDECREF(host);
        Py_XDECREF(upgrade);
        Py_XDECREF(clen);
        Py_XDECREF(block);
        Py_XDECREF(headers);
        if (info == NULL) {
            return NULL;
        }
    }

    /* -- what the version makes of the fields (as _parser._scan_head_py) -- */
    PyObject *host = PyTuple_GET_ITEM(info, 0);
    int close = PyTuple_GET_ITEM(info, 1) == Py_True;
    int keep = PyTuple_GET_ITEM(info, 2) == Py_True;
    PyObject *upgrade = PyTuple_GET_ITEM(info, 3);
    PyObject *clen = PyTuple_GET_ITEM(info, 4);
    PyObject *chunked = PyTuple_GET_ITEM(info, 5);
    PyObject *expect = PyTuple_GET_ITEM(info, 6);
    PyObject *headers = PyTuple_GET_ITEM(info, 7);
    PyObject *version;
    int keep_alive;
    if (http11) {
        if (host == Py_None) {
            Py_DECREF(info);
            Py_RETURN_NONE; /* the general path refuses it (400) */
        }
        version = version_11;
        keep_alive = !close;
    }
    else {
        if (chunked == Py_True) {
            Py_DECREF(info);
            Py_RETURN_NONE; /* Transfer-Encoding in HTTP/1.0: refused by the general path */
        }
        version = version_10;
        keep_alive = keep && !close;
        upgrade = Py_None;   /* RFC 9110 §7.8: ignored in HTTP/1.0 */
        expect = Py_False;   /* RFC 9110 §10.1.1: likewise */
    }
    PyObject *target = PyBytes_FromStringAndSize((const char *)b + target_start,
                                                 target_end - target_start);
    PyObject *end_obj = PyLong_FromSsize_t(end);
    PyObject *result = NULL;
    if (target != NULL && end_obj != NULL) {
        result = PyTuple_Pack(12, end_obj, method_strs[method], target, version, headers, host,
                              keep_alive ? Py_True : Py_False, clen, chunked, upgrade, expect,
                              hit ? Py_None : info);
    }
    Py_XDECREF(target);
    Py_XDECREF(end_obj);
    Py_DECREF(info);
    return result;
}

/* -- the response writer's hot path (as _writer.encode_fixed_response_py) -- */

/* Set by set_writer(): _writer's globals, its status-line builder, Date value
 * and the reference encoder, which any response not of the common shape is
 * handed to (so this function's answer is always the Python one).  The Date is
 * cached here per second while _writer.date_header_value is still date_func (a
 * test may replace it to pin the date: the general path then calls it). */
static PyObject *writer_globals, *status_line_func, *date_func, *encode_py, *str_date_func;
static PyObject *status_lines[2][1000]; /* [version is "1.0"][status]: bytes, cached */
static PyObject *date_value;            /* the Date value for date_second */
static time_t date_second = -1;

PyDoc_STRVAR(set_writer_doc,
"set_writer(globals, status_line, date_header_value, encode_fixed_response_py, /)\n"
"--\n\n"
"Name the writer's Python helpers that encode_fixed_response calls.");

static PyObject *
set_writer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "set_writer() takes a dict and 3 callables");
        return NULL;
    }
    if (str_date_func == NULL) {
        str_date_func = PyUnicode_InternFromString("date_header_value");
        if (str_date_func == NULL) {
            return NULL;
        }
    }
    Py_XSETREF(writer_globals, Py_NewRef(args[0]));
    Py_XSETREF(status_line_func, Py_NewRef(args[1]));
    Py_XSETREF(date_func, Py_NewRef(args[2]));
    Py_XSETREF(encode_py, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(encode_fixed_response_doc,
"encode_fixed_response(status, headers, body, method, version, keep_alive, /)\n"
"--\n\n"
"_writer.encode_fixed_response_py in C for the common response; any other goes to it.");

static PyObject *
encode_fixed_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 || encode_py == NULL) {
        goto general;
    }
    PyObject *status_obj = args[0], *headers = args[1], *body = args[2];
    PyObject *method = args[3], *version = args[4];
    if (!PyLong_CheckExact(status_obj) || !PyBytes_CheckExact(body) ||
        !PyUnicode_Check(method) || !PyUnicode_Check(version)) {
        goto general;
    }
    long status = PyLong_AsLong(status_obj);
    if (status < 200 || status > 999 || status == 204 || status == 205 || status == 304) {
        PyErr_Clear(); /* an overflow: the general path says what is wrong */
        goto general;
    }
    int v10;
    if (PyUnicode_CompareWithASCIIString(version, "1.1") == 0) {
        v10 = 0;
    }
    else if (PyUnicode_CompareWithASCIIString(version, "1.0") == 0) {
        v10 = 1;
    }
    else {
        goto general;
    }
    if (PyDict_GetItemWithError(writer_globals, str_date_func) != date_func) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        goto general; /* replaced (a test pins the date) */
    }
    int keep_alive = PyObject_IsTrue(args[5]);
    if (keep_alive < 0) {
        return NULL;
    }
    PyObject *const *items;
    Py_ssize_t count;
    if (PyList_CheckExact(headers)) {
        items = ((PyListObject *)headers)->ob_item;
        count = PyList_GET_SIZE(headers);
    }
    else if (PyTuple_CheckExact(headers)) {
        items = ((PyTupleObject *)headers)->ob_item;
        count = PyTuple_GET_SIZE(headers);
    }
    else {
        goto general;
    }
    PyObject *line = status_lines[v10][status];
    if (line == NULL) {
        line = PyObject_CallFunction(status_line_func, "lO", status, version);
        if (line == NULL) {
            return NULL;
        }
        if (!PyBytes_CheckExact(line)) {
            Py_DECREF(line);
            goto general;
        }
        status_lines[v10][status] = line; /* kept for the process's life */
    }
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        goto general;
    }
    if (ts.tv_sec != date_second || date_value == NULL) {
        PyObject *value = PyObject_CallNoArgs(date_func);
        if (value == NULL) {
            return NULL;
        }
        if (!PyBytes_CheckExact(value)) {
            Py_DECREF(value);
            goto general;
        }
        Py_XSETREF(date_value, value);
        date_second = ts.tv_sec;
    }
    /* Sizes first: every header must be a (bytes, bytes) tuple. */
    Py_ssize_t size = PyBytes_GET_SIZE(line);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            goto general;
        }
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) +
                PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 4;
    }
    Py_ssize_t body_len = PyBytes_GET_SIZE(body);
    char length[24];
    int length_len = snprintf(length, sizeof length, "%zd", body_len);
    const char *tail = !keep_alive ? "connection: close\r\n\r\n"
                       : v10       ? "connection: keep-alive\r\n\r\n"
                                   : "\r\n";
    size_t tail_len = strlen(tail);
    int head_only = PyUnicode_CompareWithASCIIString(method, "HEAD") == 0;
    size += 6 + PyBytes_GET_SIZE(date_value) + 18 + length_len + 2 + (Py_ssize_t)tail_len +
            (head_only ? 0 : body_len);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        return NULL;
    }
    char *w = PyBytes_AS_STRING(out);
#define PUT(p, n)             \
    do {                      \
        memcpy(w, (p), (n));  \
        w += (n);             \
    } while (0)
    PUT(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(items[i], 0), *value = PyTuple_GET_ITEM(items[i], 1);
        PUT(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        PUT(": ", 2);
        PUT(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        PUT("\r\n", 2);
    }
    PUT("date: ", 6);
    PUT(PyBytes_AS_STRING(date_value), PyBytes_GET_SIZE(date_value));
    PUT("\r\ncontent-length: ", 18);
    PUT(length, (size_t)length_len);
    PUT("\r\n", 2);
    PUT(tail, tail_len);
    if (!head_only) {
        PUT(PyBytes_AS_STRING(body), body_len);
    }
#undef PUT
    assert(w == PyBytes_AS_STRING(out) + size);
    return out;

general:
    if (encode_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_writer() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(encode_py, args, (size_t)nargs, NULL);
}

static PyMethodDef speedups_methods[] = {
    {"scan_head", (PyCFunction)(void (*)(void))scan_head, METH_FASTCALL, scan_head_doc},
    {"_set_headers_type", set_headers_type, METH_O, set_headers_type_doc},
    {"encode_fixed_response", (PyCFunction)(void (*)(void))encode_fixed_response, METH_FASTCALL,
     encode_fixed_response_doc},
    {"set_writer", (PyCFunction)(void (*)(void))set_writer, METH_FASTCALL, set_writer_doc},
    {NULL, NULL, 0, NULL},
};

/* Bumped whenever scan_head's or encode_fixed_response's arguments or answers
 * change (2: encode_fixed_response, 3: its set_writer renamed): _scan.py uses
 * the module only when this matches its _SPEEDUPS_INTERFACE, so a stale build
 * (an editable install does not rebuild by itself) is ignored, not misused. */
#define INTERFACE 3

static int
speedups_exec(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "INTERFACE", INTERFACE) < 0) {
        return -1;
    }
    init_tables();
    for (int m = 0; m < N_METHODS; m++) {
        if (method_strs[m] == NULL) {
            method_strs[m] = PyUnicode_InternFromString(method_names[m]);
            if (method_strs[m] == NULL) {
                return -1;
            }
        }
    }
    if (version_11 == NULL) {
        version_11 = PyUnicode_InternFromString("1.1");
        version_10 = PyUnicode_InternFromString("1.0");
        if (version_11 == NULL || version_10 == NULL) {
            return -1;
        }
    }
    if (str_block == NULL) {
        str_block = PyUnicode_InternFromString("_block");
        str_raw = PyUnicode_InternFromString("_raw");
        str_index = PyUnicode_InternFromString("_index");
        if (str_block == NULL || str_raw == NULL || str_index == NULL) {
            return -1;
        }
    }
    if (kwnames_block == NULL) {
        kwnames_block = Py_BuildValue("(s)", "block");
        if (kwnames_block == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, (void *)speedups_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* The method strings are process-wide statics: one interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "peregrine_rt._http._speedups",
    .m_doc = "The request parser's and response writer's fast paths in C (optional).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
