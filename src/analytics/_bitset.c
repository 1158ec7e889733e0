/* The one compiled loop of analytics/distinct.py: set the bit of each uint32 pattern in a table
   (numpy can only scatter whole bytes; distinct.py says why bits). Built at install when a C
   compiler is there (optional: without it, distinct.py marks through numpy, slower). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *set_bits(PyObject *self, PyObject *args) {
    Py_buffer table, patterns;
    if (!PyArg_ParseTuple(args, "w*y*:set_bits", &table, &patterns)) {
        return NULL;
    }
    if (patterns.len % 4 != 0) {
        PyBuffer_Release(&table);
        PyBuffer_Release(&patterns);
        PyErr_SetString(PyExc_ValueError, "patterns must be uint32 (a multiple of 4 bytes)");
        return NULL;
    }
    uint8_t *bits = (uint8_t *)table.buf;
    const uint8_t *raw = (const uint8_t *)patterns.buf;
    Py_ssize_t count = patterns.len / 4, size = table.len, outside = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t pattern;
        memcpy(&pattern, raw + 4 * i, 4); /* no alignment assumed */
        Py_ssize_t byte = (Py_ssize_t)(pattern >> 3);
        if (byte < size) {
            bits[byte] |= (uint8_t)(1u << (pattern & 7u));
        } else {
            outside++;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&table);
    PyBuffer_Release(&patterns);
    if (outside) {
        PyErr_Format(PyExc_ValueError, "%zd patterns fall outside the table", outside);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_bits", set_bits, METH_VARARGS,
     "set_bits(table, patterns): set bit p & 7 of byte p >> 3 of the writable buffer `table` for "
     "every uint32 p of `patterns`, without the GIL (not atomic: one caller per table at a time)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bitset", NULL, -1, methods};

PyMODINIT_FUNC PyInit__bitset(void) { return PyModule_Create(&module); }
