# cython: language_level=3
"""The compiled PKCS#11 core: module loading, C calls without the GIL, buffers and wiping.

Policy (pooling, retries, templates, Cosmian semantics) lives in the Python modules above this
one. Every C call made here releases the GIL; every failing CK_RV becomes an exception through
``kms_iface.errors.pkcs11_error``, the one place that maps codes to classes.
"""

from collections import namedtuple

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.object cimport PyObject
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset, strlen
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlclose, dlerror, dlopen, dlsym

from kms_iface._ck cimport *

from kms_iface.errors import HsmError, InvalidRequestError, pkcs11_error

cdef extern from "string.h" nogil:
    void explicit_bzero(void *s, size_t n)

OS_LOCKING_OK = CKF_OS_LOCKING_OK
# The largest attribute value the core will allocate for; a module reporting more is refused.
MAX_ATTRIBUTE_LEN = 16 * 1024 * 1024

include "_secret.pxi"
include "_template.pxi"
include "_mechanism.pxi"
include "_library.pxi"
include "_session.pxi"
