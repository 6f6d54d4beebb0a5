/* v1 identification's hot loop in C: try one AES-128 key after another on the first block(s) of
 * new connections and report where the plaintext starts with the key's expected 9-byte prefix.
 *
 * The decryption is OpenSSL's (EVP, AES-128-ECB, one context per key made once); only the loop is
 * here. From Python the same loop costs one call per key (~250 ns); here it is ~25 ns, so 10,000
 * keys take about 0.25 ms instead of 2.5 ms. services/auth/identify.py uses it when it was built and
 * falls back to its own loop otherwise; both give the same answers (tests/auth/test_identify.py).
 *
 *   Scanner(keys, expected)   keys: n * 16 bytes; expected: n * 9 bytes (prefix XOR IV)
 *   .one(block) -> [key index, ...]                    the keys block 0 matches
 *   .many(blocks, start, stop) -> [(block, key), ...]  for the keys start..stop-1, every block
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/evp.h>

#define BLOCK 16
#define HEAD 9

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    EVP_CIPHER_CTX **ctx;
    unsigned char *expected;  /* n * HEAD */
    unsigned char *plain;     /* scratch: n * BLOCK, for one() */
} Scanner;

static void Scanner_dealloc(Scanner *self) {
    if (self->ctx != NULL) {
        for (Py_ssize_t i = 0; i < self->n; i++)
            EVP_CIPHER_CTX_free(self->ctx[i]);
        PyMem_Free(self->ctx);
    }
    PyMem_Free(self->expected);
    PyMem_Free(self->plain);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keys", "expected", NULL};
    Py_buffer keys, expected;
    if (self->ctx != NULL) {
        PyErr_SetString(PyExc_TypeError, "Scanner is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", kwlist, &keys, &expected))
        return -1;
    int rc = -1;
    Py_ssize_t n = keys.len / BLOCK;
    if (keys.len % BLOCK || expected.len != n * HEAD) {
        PyErr_SetString(PyExc_ValueError, "keys must be n*16 bytes and expected n*9 bytes");
        goto done;
    }
    self->ctx = PyMem_Calloc(n ? n : 1, sizeof(EVP_CIPHER_CTX *));
    self->expected = PyMem_Malloc(n ? n * HEAD : 1);
    self->plain = PyMem_Malloc(n ? n * BLOCK : 1);
    if (self->ctx == NULL || self->expected == NULL || self->plain == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(self->expected, expected.buf, n * HEAD);
    const unsigned char *key = keys.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        self->ctx[i] = ctx;
        self->n = i + 1;  /* freed by dealloc from here on */
        if (ctx == NULL || !EVP_DecryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key + i * BLOCK, NULL)
            || !EVP_CIPHER_CTX_set_padding(ctx, 0)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up an AES-128-ECB context");
            goto done;
        }
    }
    self->n = n;
    rc = 0;
done:
    PyBuffer_Release(&keys);
    PyBuffer_Release(&expected);
    return rc;
}

/* Decrypt len bytes (whole blocks) under key i into out. */
static int decrypt(Scanner *self, Py_ssize_t i, const unsigned char *in, Py_ssize_t len, unsigned char *out) {
    int outlen = 0;
    return EVP_DecryptUpdate(self->ctx[i], out, &outlen, in, (int)len) && outlen == len;
}

static PyObject *Scanner_one(Scanner *self, PyObject *arg) {
    Py_buffer block;
    if (PyObject_GetBuffer(arg, &block, PyBUF_SIMPLE) < 0)
        return NULL;
    if (block.len != BLOCK) {
        PyBuffer_Release(&block);
        PyErr_SetString(PyExc_ValueError, "one() takes one 16-byte block");
        return NULL;
    }
    int failed = 0;  /* the GIL stays held: the contexts and the scratch are shared */
    for (Py_ssize_t i = 0; i < self->n && !failed; i++)
        failed = !decrypt(self, i, block.buf, BLOCK, self->plain + i * BLOCK);
    PyBuffer_Release(&block);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to decrypt a block");
        return NULL;
    }
    PyObject *found = PyList_New(0);
    for (Py_ssize_t i = 0; found != NULL && i < self->n; i++) {
        if (memcmp(self->plain + i * BLOCK, self->expected + i * HEAD, HEAD) == 0) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(found, index) < 0)
                Py_CLEAR(found);
            Py_XDECREF(index);
        }
    }
    return found;
}

static PyObject *Scanner_many(Scanner *self, PyObject *args) {
    Py_buffer blocks;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "y*nn", &blocks, &start, &stop))
        return NULL;
    PyObject *found = NULL;
    unsigned char *plain = NULL;
    if (blocks.len % BLOCK || blocks.len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "blocks must be whole 16-byte blocks");
        goto done;
    }
    if (start < 0) start = 0;
    if (stop > self->n) stop = self->n;
    Py_ssize_t count = blocks.len / BLOCK;
    found = PyList_New(0);
    plain = PyMem_Malloc(blocks.len ? blocks.len : 1);
    if (found == NULL || plain == NULL) {
        Py_CLEAR(found);
        if (plain == NULL) PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = start; i < stop; i++) {
        if (!decrypt(self, i, blocks.buf, blocks.len, plain)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to decrypt a block");
            Py_CLEAR(found);
            goto done;
        }
        for (Py_ssize_t b = 0; b < count; b++) {
            if (memcmp(plain + b * BLOCK, self->expected + i * HEAD, HEAD) != 0)
                continue;
            PyObject *pair = Py_BuildValue("(nn)", b, i);
            if (pair == NULL || PyList_Append(found, pair) < 0) {
                Py_XDECREF(pair);
                Py_CLEAR(found);
                goto done;
            }
            Py_DECREF(pair);
        }
    }
done:
    PyMem_Free(plain);
    PyBuffer_Release(&blocks);
    return found;
}

static Py_ssize_t Scanner_len(Scanner *self) {
    return self->n;
}

static PyMethodDef Scanner_methods[] = {
    {"one", (PyCFunction)Scanner_one, METH_O, "Indices of the keys under which the block starts with their prefix."},
    {"many", (PyCFunction)Scanner_many, METH_VARARGS,
     "(block index, key index) of every match, for the keys start..stop-1 over all the blocks."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Scanner_as_sequence = {.sq_length = (lenfunc)Scanner_len};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.auth._keyscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AES-128 keys tried on first blocks (v1 identification).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_as_sequence = &Scanner_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keyscan", "v1 identification's key loop over OpenSSL's AES.", -1, NULL,
};

PyMODINIT_FUNC PyInit__keyscan(void) {
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
