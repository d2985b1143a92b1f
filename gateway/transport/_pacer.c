/* Timed sends for the playout clock (gateway/transport/pacer.py).
 *
 * send_at(deadline_ns, datagrams) sleeps until deadline_ns on CLOCK_MONOTONIC (absolute, so the sleep's own
 * lateness never accumulates) and then sends every datagram with one sendto each, all without holding the
 * GIL: the event loop keeps running while the pacer thread waits and sends, and the packets of a tick leave
 * on the grid whatever the loop is busy with. `datagrams` is a list of (fd, payload, sockaddr) tuples, where
 * sockaddr is the packed struct sockaddr_in/sockaddr_in6 made by sockaddr(). Returns a list of (index,
 * errno) for the datagrams the kernel refused (empty when all left).
 *
 * send_at(deadline_ns, datagrams, withdrawn): `withdrawn` is a bytearray of one byte per datagram that the
 * caller may still write to while this call sleeps (the event loop, without any lock: a byte store is
 * atomic); datagram i is skipped when withdrawn[i] is non-zero at the deadline. The caller withdraws a
 * datagram only while its deadline is comfortably ahead (PlayoutScheduler.withdraw), so the pacer never
 * races with a store it could half see.
 *
 * sockaddr(host, port) packs an IPv4 or IPv6 literal address once per destination.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

typedef struct {
    int fd;
    const char *data;
    Py_ssize_t size;
    const struct sockaddr *addr;
    socklen_t addrlen;
    int error;
} item_t;

static PyObject *
pacer_sockaddr(PyObject *self, PyObject *args)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof v4);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof v4);
    }
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof v6);
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof v6);
    }
    PyErr_Format(PyExc_ValueError, "not an IP address literal: %s", host);
    return NULL;
}

static PyObject *
pacer_send_at(PyObject *self, PyObject *args)
{
    long long deadline_ns;
    PyObject *list;
    PyObject *mask_obj = NULL;
    if (!PyArg_ParseTuple(args, "LO!|O", &deadline_ns, &PyList_Type, &list, &mask_obj))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    Py_buffer mask = {0};
    int have_mask = 0;
    if (mask_obj != NULL && mask_obj != Py_None) {
        if (!PyByteArray_Check(mask_obj)) {
            PyErr_SetString(PyExc_TypeError, "withdrawn: a bytearray");
            return NULL;
        }
        /* Holding the buffer keeps the bytearray from being resized (its storage from moving) meanwhile. */
        if (PyObject_GetBuffer(mask_obj, &mask, PyBUF_WRITABLE) < 0)
            return NULL;
        have_mask = 1;
        if (mask.len < n) {
            PyBuffer_Release(&mask);
            PyErr_SetString(PyExc_ValueError, "withdrawn: one byte per datagram");
            return NULL;
        }
    }
    item_t *items = n ? PyMem_Calloc((size_t)n, sizeof(item_t)) : NULL;
    if (n && items == NULL) {
        if (have_mask)
            PyBuffer_Release(&mask);
        return PyErr_NoMemory();
    }
    /* The list and the bytes in it stay referenced by our caller's argument tuple for the whole call. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(t, 1)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(t, 2))) {
            PyMem_Free(items);
            if (have_mask)
                PyBuffer_Release(&mask);
            PyErr_SetString(PyExc_TypeError, "datagrams: (fd: int, payload: bytes, sockaddr: bytes) tuples");
            return NULL;
        }
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
        if (fd == -1 && PyErr_Occurred()) {
            PyMem_Free(items);
            if (have_mask)
                PyBuffer_Release(&mask);
            return NULL;
        }
        PyObject *payload = PyTuple_GET_ITEM(t, 1), *addr = PyTuple_GET_ITEM(t, 2);
        Py_ssize_t addrlen = PyBytes_GET_SIZE(addr);
        if (addrlen != (Py_ssize_t)sizeof(struct sockaddr_in) && addrlen != (Py_ssize_t)sizeof(struct sockaddr_in6)) {
            PyMem_Free(items);
            if (have_mask)
                PyBuffer_Release(&mask);
            PyErr_SetString(PyExc_ValueError, "sockaddr: use pacer.sockaddr(host, port)");
            return NULL;
        }
        items[i].fd = (int)fd;
        items[i].data = PyBytes_AS_STRING(payload);
        items[i].size = PyBytes_GET_SIZE(payload);
        items[i].addr = (const struct sockaddr *)PyBytes_AS_STRING(addr);
        items[i].addrlen = (socklen_t)addrlen;
    }
    volatile const unsigned char *withdrawn = have_mask ? (volatile const unsigned char *)mask.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    struct timespec when = {(time_t)(deadline_ns / 1000000000LL), (long)(deadline_ns % 1000000000LL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, NULL) == EINTR) {
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (withdrawn != NULL && withdrawn[i])
            continue;
        if (sendto(items[i].fd, items[i].data, (size_t)items[i].size, MSG_DONTWAIT, items[i].addr,
                   items[i].addrlen) < 0)
            items[i].error = errno;
    }
    Py_END_ALLOW_THREADS
    if (have_mask)
        PyBuffer_Release(&mask);
    PyObject *failed = PyList_New(0);
    for (Py_ssize_t i = 0; failed != NULL && i < n; i++) {
        if (items[i].error) {
            PyObject *pair = Py_BuildValue("(ni)", i, items[i].error);
            if (pair == NULL || PyList_Append(failed, pair) < 0)
                Py_CLEAR(failed);
            Py_XDECREF(pair);
        }
    }
    PyMem_Free(items);
    return failed;
}

static PyMethodDef methods[] = {
    {"send_at", pacer_send_at, METH_VARARGS,
     "send_at(deadline_ns, datagrams) -> [(index, errno)]: sleep until deadline_ns (CLOCK_MONOTONIC), then "
     "sendto each (fd, payload, sockaddr), without the GIL; send_at(deadline_ns, datagrams, withdrawn) skips "
     "datagram i when the bytearray withdrawn[i] is non-zero at the deadline"},
    {"sockaddr", pacer_sockaddr, METH_VARARGS, "sockaddr(host, port) -> packed sockaddr_in/sockaddr_in6"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gateway.transport._pacer", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__pacer(void)
{
    return PyModule_Create(&module);
}
