/*
 * peregrine_rt._ws_speedups: the WebSocket fast path's frame reader, in C.
 *
 * parse_simple_frames() does for a buffer of client frames exactly what the
 * pure-Python reference (_frames.parse_simple_frames_py) does: from offset
 * pos it reads complete frames with FIN set, no RSV bits, opcode text or
 * binary, masked, with a 7-bit or a minimal 16-bit length, no longer than
 * max_size, and (for text) valid UTF-8; it stops at the start of the first
 * frame of any other shape and returns (messages, offset).  Stopping is never
 * a verdict: wsproto reads (and judges) the rest.  So this file only has to
 * be right about what it accepts and where it stops, and the tests compare it
 * with the Python function on random bytes and on generated streams
 * (tests/unit/test_ws_speedups.py); `make sanitize` runs them on an
 * ASan/UBSan build.
 *
 * unmask() is the XOR with the repeating 4-byte key, 8 bytes at a time
 * (memcpy in and out of a uint64_t: no alignment assumption, no aliasing).
 *
 * encode_frame() writes a server frame (header and payload, one allocation)
 * as _frames.encode_frame_py does, for every message a socket or the hub sends.
 *
 * Every read of the buffer is bounded by its length; the bound checks sit
 * next to the reads and are written as "bytes left >= k" so that no sum can
 * overflow.  No dependency beyond the CPython C API; no module state.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Payloads up to this size are unmasked on the stack before UTF-8 decoding. */
#define STACK_PAYLOAD 512

/* dst[i] = src[i] ^ mask[i % 4] for i < n (dst may be src). */
static void
xor_mask(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char mask[4])
{
    unsigned char key8[8];
    uint64_t key;
    Py_ssize_t i = 0;

    memcpy(key8, mask, 4);
    memcpy(key8 + 4, mask, 4);
    memcpy(&key, key8, 8);
    for (; n - i >= 8; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {
        dst[i] = (unsigned char)(src[i] ^ mask[i & 3]);
    }
}

/* The message of one frame's payload: bytes (binary), str (text), NULL with
 * no exception set for text that is not UTF-8, NULL with one on failure. */
static PyObject *
frame_message(const unsigned char *payload, Py_ssize_t length, const unsigned char mask[4], int text)
{
    if (!text) {
        PyObject *out = PyBytes_FromStringAndSize(NULL, length);
        if (out != NULL) {
            xor_mask((unsigned char *)PyBytes_AS_STRING(out), payload, length, mask);
        }
        return out;
    }
    unsigned char stack[STACK_PAYLOAD];
    unsigned char *buf = stack;
    if (length > STACK_PAYLOAD) {
        buf = PyMem_Malloc((size_t)length);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    xor_mask(buf, payload, length, mask);
    PyObject *out = PyUnicode_DecodeUTF8((const char *)buf, length, NULL); /* strict */
    if (buf != stack) {
        PyMem_Free(buf);
    }
    if (out == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear(); /* not UTF-8: wsproto reads this frame and closes with 1007 */
    }
    return out;
}

PyDoc_STRVAR(parse_simple_frames_doc,
"parse_simple_frames(data, max_size, pos=0)\n--\n\n"
"Read the simple client frames of data from offset pos on.\n\n"
"Returns (messages, offset) exactly as _frames.parse_simple_frames_py does.\n"
"data is any contiguous buffer; max_size is an int or None; pos must be\n"
"an int >= 0 (ValueError otherwise; past the end of data nothing is read).");

/* Gathers parse_simple_frames' arguments, given by position or by name,
 * into args[0..2] (NULL: not given).  0, or -1 with TypeError set. */
static int
gather_arguments(PyObject *const *given, Py_ssize_t nargs, PyObject *kwnames, PyObject *args[3])
{
    static const char *const names[3] = {"data", "max_size", "pos"};
    args[0] = args[1] = args[2] = NULL;
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "parse_simple_frames() takes at most 3 arguments (%zd given)", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        args[i] = given[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int j = 0; j < 3; j++) {
            if (PyUnicode_CompareWithASCIIString(name, names[j]) == 0) {
                slot = j;
            }
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError,
                         "parse_simple_frames() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (args[slot] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "parse_simple_frames() got multiple values for argument '%s'",
                         names[slot]);
            return -1;
        }
        args[slot] = given[nargs + k];
    }
    for (int j = 0; j < 2; j++) {
        if (args[j] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "parse_simple_frames() missing required argument '%s'", names[j]);
            return -1;
        }
    }
    return 0;
}

static PyObject *
parse_simple_frames(PyObject *Py_UNUSED(module), PyObject *const *given, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    PyObject *args[3];
    if (gather_arguments(given, nargs, kwnames, args) < 0) {
        return NULL;
    }
    /* max_size: None (no limit) or an int; limit < 0 means "none": a value
     * above LLONG_MAX admits every length, one below LLONG_MIN none. */
    long long max_size = -1;
    int no_frame_fits = 0;
    if (args[1] != Py_None) {
        if (!PyLong_Check(args[1])) {
            PyErr_Format(PyExc_TypeError, "max_size must be an int or None, not %.100s",
                         Py_TYPE(args[1])->tp_name);
            return NULL;
        }
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(args[1], &overflow);
        if (value == -1 && !overflow && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow < 0 || (!overflow && value < 0)) {
            no_frame_fits = 1;
        }
        else if (!overflow) {
            max_size = value;
        }
    }
    Py_ssize_t pos = 0;
    if (args[2] != NULL) {
        if (!PyLong_Check(args[2])) {
            PyErr_Format(PyExc_TypeError, "pos must be an int, not %.100s",
                         Py_TYPE(args[2])->tp_name);
            return NULL;
        }
        pos = PyLong_AsSsize_t(args[2]);
        if (pos == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (pos < 0) {
            PyErr_SetString(PyExc_ValueError, "pos must not be negative");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = view.buf;
    const Py_ssize_t n = view.len;
    PyObject *messages = PyList_New(0);
    if (messages == NULL) {
        goto fail;
    }
    /* Past the end: nothing to read, the offset given back unchanged. */
    while (pos <= n && n - pos >= 6) {
        const unsigned char b0 = data[pos];
        const unsigned char b1 = data[pos + 1];
        if (b0 != 0x81 && b0 != 0x82) { /* FIN, no RSV, text or binary */
            break;
        }
        Py_ssize_t length = b1 & 0x7F;
        if (!(b1 & 0x80) || length == 127) { /* unmasked (an error), or a 64-bit length */
            break;
        }
        Py_ssize_t head = 6;
        if (length == 126) {
            if (n - pos < 8) {
                break;
            }
            length = ((Py_ssize_t)data[pos + 2] << 8) | data[pos + 3];
            if (length < 126) { /* not the minimal encoding: wsproto refuses it */
                break;
            }
            head = 8;
        }
        /* Frame complete?  (head <= n - pos here, length <= 65535.) */
        if (length > n - pos - head) {
            break;
        }
        if (no_frame_fits || (max_size >= 0 && (long long)length > max_size)) {
            break;
        }
        const unsigned char *payload = data + pos + head;
        PyObject *message = frame_message(payload, length, payload - 4, b0 == 0x81);
        if (message == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            break; /* text that is not UTF-8 */
        }
        int appended = PyList_Append(messages, message);
        Py_DECREF(message);
        if (appended < 0) {
            goto fail;
        }
        pos += head + length;
    }
    PyBuffer_Release(&view);
    PyObject *offset = PyLong_FromSsize_t(pos);
    if (offset == NULL) {
        Py_DECREF(messages);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(messages);
        Py_DECREF(offset);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, messages);
    PyTuple_SET_ITEM(result, 1, offset);
    return result;

fail:
    Py_XDECREF(messages);
    PyBuffer_Release(&view);
    return NULL;
}

PyDoc_STRVAR(unmask_doc,
"unmask(payload, mask, /)\n--\n\n"
"payload XOR the repeating 4-byte mask, as bytes (ValueError unless len(mask) == 4).");

static PyObject *
unmask(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "unmask() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_buffer payload, mask;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    PyObject *out = NULL;
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "the mask must be 4 bytes");
    }
    else {
        unsigned char key[4];
        memcpy(key, mask.buf, 4); /* mask and payload may be the same buffer */
        out = PyBytes_FromStringAndSize(NULL, payload.len);
        if (out != NULL) {
            xor_mask((unsigned char *)PyBytes_AS_STRING(out), payload.buf, payload.len, key);
        }
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&payload);
    return out;
}

PyDoc_STRVAR(encode_frame_doc,
"encode_frame(message, /)\n--\n\n"
"One unmasked server frame holding the whole message: text for str (UTF-8),\n"
"binary for bytes or any other object with the buffer protocol (else TypeError).");

static PyObject *
encode_frame(PyObject *Py_UNUSED(module), PyObject *message)
{
    PyObject *owned = NULL; /* the payload's bytes, when not read in place */
    const char *payload;
    Py_ssize_t n;
    unsigned char opcode;

    if (PyUnicode_Check(message)) {
        opcode = 0x81;
        if (PyUnicode_IS_ASCII(message)) { /* its characters are its UTF-8 */
            payload = (const char *)PyUnicode_DATA(message);
            n = PyUnicode_GET_LENGTH(message);
        }
        else {
            /* Not PyUnicode_AsUTF8AndSize: that keeps a UTF-8 copy in the str. */
            owned = PyUnicode_AsUTF8String(message);
            if (owned == NULL) {
                return NULL;
            }
        }
    }
    else {
        opcode = 0x82;
        if (PyBytes_CheckExact(message)) {
            Py_INCREF(message);
            owned = message;
        }
        else if (!PyObject_CheckBuffer(message)) {
            /* A buffer's bytes only: not __bytes__, __index__ (bytes(5) is five
             * zero bytes) nor iterables of ints, as in Python's encode_frame_py. */
            PyErr_Format(PyExc_TypeError, "a message is str or bytes, not %.100s",
                         Py_TYPE(message)->tp_name);
            return NULL;
        }
        else {
            owned = PyBytes_FromObject(message); /* its buffer, made contiguous */
            if (owned == NULL) {
                return NULL;
            }
        }
    }
    if (owned != NULL) {
        payload = PyBytes_AS_STRING(owned);
        n = PyBytes_GET_SIZE(owned);
    }
    Py_ssize_t head = n < 126 ? 2 : (n < 65536 ? 4 : 10);
    PyObject *out = NULL;
    if (n > PY_SSIZE_T_MAX - head) {
        PyErr_NoMemory();
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, head + n);
    }
    if (out != NULL) {
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
        uint64_t len = (uint64_t)n;
        p[0] = opcode;
        if (n < 126) {
            p[1] = (unsigned char)n;
        }
        else if (n < 65536) {
            p[1] = 126;
            p[2] = (unsigned char)(len >> 8);
            p[3] = (unsigned char)len;
        }
        else {
            p[1] = 127;
            for (int i = 0; i < 8; i++) {
                p[2 + i] = (unsigned char)(len >> (56 - 8 * i));
            }
        }
        if (n > 0) {
            memcpy(p + head, payload, (size_t)n);
        }
    }
    Py_XDECREF(owned);
    return out;
}

static PyMethodDef ws_speedups_methods[] = {
    {"parse_simple_frames", (PyCFunction)(void (*)(void))parse_simple_frames,
     METH_FASTCALL | METH_KEYWORDS,
     parse_simple_frames_doc},
    {"unmask", (PyCFunction)(void (*)(void))unmask, METH_FASTCALL, unmask_doc},
    {"encode_frame", (PyCFunction)encode_frame, METH_O, encode_frame_doc},
    {NULL, NULL, 0, NULL},
};

static int
ws_speedups_exec(PyObject *module)
{
    /* Bumped whenever a function's contract changes: _frames.py ignores a
     * build from other source (an in-place .so older than the .c). */
    return PyModule_AddIntConstant(module, "INTERFACE", 2);
}

static PyModuleDef_Slot ws_speedups_slots[] = {
    {Py_mod_exec, (void *)ws_speedups_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* No state at all, static or per module. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef ws_speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "peregrine_rt._ws_speedups",
    .m_doc = "The WebSocket fast path's frame reader in C (optional).",
    .m_size = 0,
    .m_methods = ws_speedups_methods,
    .m_slots = ws_speedups_slots,
};

PyMODINIT_FUNC
PyInit__ws_speedups(void)
{
    return PyModuleDef_Init(&ws_speedups_module);
}
