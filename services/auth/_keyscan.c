/* v1 identification's hot loop in C: try one AES-128 key after another on the first block(s) of
 * new connections and report where the plaintext starts with the key's expected 9-byte prefix.
 *
 * Where the CPU has AES instructions (AES-NI, checked at run time), each key's decryption round
 * keys are expanded once into one array and a block costs eleven AES instructions (~6 ns a key:
 * 10,000 keys in ~0.06 ms). Elsewhere the decryption is OpenSSL's (EVP, AES-128-ECB, one context
 * per key made once), ~40 ns a key. From Python the loop costs one call per key (~250 ns).
 * services/auth/identify.py uses this module when it was built and falls back to its own loop
 * otherwise; every path gives the same answers (tests/auth/test_keyscan.py).
 *
 *   Scanner(keys, expected, aesni=True)   keys: n * 16 bytes; expected: n * 9 bytes (prefix XOR IV);
 *                                         aesni=False: OpenSSL's loop even where AES-NI is there
 *   .aesni                                which of the two it runs
 *   .one(block) -> [key index, ...]                    the keys block 0 matches
 *   .many(blocks, start, stop) -> [(block, key), ...]  for the keys start..stop-1, every block
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define BLOCK 16
#define HEAD 9
#define ROUNDS 11  /* AES-128: the initial key and ten round keys */

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AESNI 1
#include <wmmintrin.h>
#include <emmintrin.h>
#else
#define HAVE_AESNI 0
#endif

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    int aesni;
    EVP_CIPHER_CTX **ctx;     /* without AES-NI: n OpenSSL contexts */
    unsigned char *rounds;    /* with AES-NI: n * ROUNDS * BLOCK decryption round keys */
    unsigned char *expected;  /* n * HEAD */
    unsigned char *plain;     /* scratch: n * BLOCK, for one() */
} Scanner;

#if HAVE_AESNI
/* The AES-128 key schedule (FIPS-197 5.2) with AESKEYGENASSIST, one round constant per step. */
__attribute__((target("aes,sse2")))
static __m128i expand_step(__m128i key, __m128i assist) {
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

#define EXPAND(i, rcon) enc[i] = expand_step(enc[i - 1], _mm_aeskeygenassist_si128(enc[i - 1], rcon))

/* The round keys of the equivalent inverse cipher (FIPS-197 5.3.5): the encryption schedule in
 * reverse order, the inner nine through InvMixColumns (AESIMC). */
__attribute__((target("aes,sse2")))
static void decryption_rounds(const unsigned char *key, unsigned char *out) {
    __m128i enc[ROUNDS];
    enc[0] = _mm_loadu_si128((const __m128i *)key);
    EXPAND(1, 0x01); EXPAND(2, 0x02); EXPAND(3, 0x04); EXPAND(4, 0x08); EXPAND(5, 0x10);
    EXPAND(6, 0x20); EXPAND(7, 0x40); EXPAND(8, 0x80); EXPAND(9, 0x1b); EXPAND(10, 0x36);
    __m128i *dec = (__m128i *)out;
    _mm_storeu_si128(dec, enc[10]);
    for (int r = 1; r < ROUNDS - 1; r++)
        _mm_storeu_si128(dec + r, _mm_aesimc_si128(enc[ROUNDS - 1 - r]));
    _mm_storeu_si128(dec + ROUNDS - 1, enc[0]);
}

__attribute__((target("aes,sse2")))
static void decrypt_aesni(const unsigned char *rounds, const unsigned char *in, Py_ssize_t len,
                          unsigned char *out) {
    const __m128i *k = (const __m128i *)rounds;
    __m128i r[ROUNDS];
    for (int i = 0; i < ROUNDS; i++)
        r[i] = _mm_loadu_si128(k + i);
    for (Py_ssize_t b = 0; b < len; b += BLOCK) {
        __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + b)), r[0]);
        for (int i = 1; i < ROUNDS - 1; i++)
            x = _mm_aesdec_si128(x, r[i]);
        _mm_storeu_si128((__m128i *)(out + b), _mm_aesdeclast_si128(x, r[ROUNDS - 1]));
    }
}

/* One block under keys first..first+3 at once: four independent chains keep the AES unit busy
 * (one key's eleven steps, each waiting for the last, would leave it idle most of the time). */
__attribute__((target("aes,sse2")))
static void decrypt4_aesni(const unsigned char *rounds, const unsigned char *in, unsigned char *out) {
    const __m128i *k = (const __m128i *)rounds;
    __m128i block = _mm_loadu_si128((const __m128i *)in);
    __m128i x[4];
    for (int j = 0; j < 4; j++)
        x[j] = _mm_xor_si128(block, _mm_loadu_si128(k + j * ROUNDS));
    for (int i = 1; i < ROUNDS - 1; i++)
        for (int j = 0; j < 4; j++)
            x[j] = _mm_aesdec_si128(x[j], _mm_loadu_si128(k + j * ROUNDS + i));
    for (int j = 0; j < 4; j++)
        _mm_storeu_si128((__m128i *)(out + j * BLOCK),
                         _mm_aesdeclast_si128(x[j], _mm_loadu_si128(k + j * ROUNDS + ROUNDS - 1)));
}

static int cpu_has_aesni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse2");
}
#else
static void decryption_rounds(const unsigned char *key, unsigned char *out) { (void)key; (void)out; }
static void decrypt_aesni(const unsigned char *rounds, const unsigned char *in, Py_ssize_t len,
                          unsigned char *out) { (void)rounds; (void)in; (void)len; (void)out; }
static void decrypt4_aesni(const unsigned char *rounds, const unsigned char *in, unsigned char *out) {
    (void)rounds; (void)in; (void)out;
}
static int cpu_has_aesni(void) { return 0; }
#endif

static void Scanner_dealloc(Scanner *self) {
    if (self->rounds != NULL) {  /* key material: wiped as EVP_CIPHER_CTX_free wipes its own */
        OPENSSL_cleanse(self->rounds, self->n * ROUNDS * BLOCK);
        PyMem_Free(self->rounds);
    }
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
    static char *kwlist[] = {"keys", "expected", "aesni", NULL};
    Py_buffer keys, expected;
    int want_aesni = 1;
    if (self->ctx != NULL || self->rounds != NULL) {
        PyErr_SetString(PyExc_TypeError, "Scanner is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*|p", kwlist, &keys, &expected, &want_aesni))
        return -1;
    int rc = -1;
    Py_ssize_t n = keys.len / BLOCK;
    if (keys.len % BLOCK || expected.len != n * HEAD) {
        PyErr_SetString(PyExc_ValueError, "keys must be n*16 bytes and expected n*9 bytes");
        goto done;
    }
    self->expected = PyMem_Malloc(n ? n * HEAD : 1);
    self->plain = PyMem_Malloc(n ? n * BLOCK : 1);
    if (self->expected == NULL || self->plain == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(self->expected, expected.buf, n * HEAD);
    const unsigned char *key = keys.buf;
    self->aesni = want_aesni && cpu_has_aesni();
    if (self->aesni) {
        self->rounds = PyMem_Malloc(n ? n * ROUNDS * BLOCK : 1);
        if (self->rounds == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            decryption_rounds(key + i * BLOCK, self->rounds + i * ROUNDS * BLOCK);
        self->n = n;
        rc = 0;
        goto done;
    }
    self->ctx = PyMem_Calloc(n ? n : 1, sizeof(EVP_CIPHER_CTX *));
    if (self->ctx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
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
    if (self->aesni) {
        decrypt_aesni(self->rounds + i * ROUNDS * BLOCK, in, len, out);
        return 1;
    }
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
    Py_ssize_t i = 0;
    if (self->aesni)
        for (; i + 4 <= self->n; i += 4)
            decrypt4_aesni(self->rounds + i * ROUNDS * BLOCK, block.buf, self->plain + i * BLOCK);
    for (; i < self->n && !failed; i++)
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

static PyObject *Scanner_get_aesni(Scanner *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->aesni);
}

static PyGetSetDef Scanner_getset[] = {
    {"aesni", (getter)Scanner_get_aesni, NULL, "True when it decrypts with the CPU's AES instructions.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

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
    .tp_getset = Scanner_getset,
    .tp_as_sequence = &Scanner_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keyscan", "v1 identification's key loop (AES-NI, else OpenSSL's AES).", -1, NULL,
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
