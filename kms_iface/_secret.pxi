# Wipeable buffers: SecretBytes and the wipe() primitive.

cdef inline void _wipe(void *p, size_t n) noexcept nogil:
    if p != NULL and n:
        explicit_bzero(p, n)


def wipe(buffer):
    """Overwrite a writable buffer with zeros in a way the compiler cannot drop."""
    cdef Py_buffer view
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
    try:
        _wipe(view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)


cdef Py_ssize_t _UNIT_STRIDE = 1


cdef class SecretBytes:
    """A mutable byte buffer for PINs, key values and plaintext, wiped on demand and on free.

    It supports the buffer protocol (``memoryview(s)``, ``bytes(s)``), compares in constant time
    and never shows its content in ``repr``. Turning it into ``bytes`` is the caller's choice.
    """

    cdef unsigned char *_buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef int _exports
    cdef bint _zeroized

    __hash__ = None

    def __cinit__(self, data=0):
        cdef Py_buffer view
        cdef Py_ssize_t n
        if isinstance(data, int):
            n = data
            if n < 0:
                raise InvalidRequestError("SecretBytes length must not be negative")
            self._alloc(n)
            memset(self._buf, 0, <size_t>n)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                self._alloc(view.len)
                memcpy(self._buf, view.buf, <size_t>view.len)
            finally:
                PyBuffer_Release(&view)

    cdef int _alloc(self, Py_ssize_t n) except -1:
        self._buf = <unsigned char *>malloc(<size_t>(n if n > 0 else 1))
        if self._buf == NULL:
            raise MemoryError()
        self._len = n
        self._cap = n
        return 0

    cdef int _grow(self, Py_ssize_t n) except -1:
        """Replace the storage by a wiped, larger one (content is not kept)."""
        cdef unsigned char *fresh
        if self._exports:
            raise BufferError("SecretBytes is exported and cannot be resized")
        fresh = <unsigned char *>malloc(<size_t>(n if n > 0 else 1))
        if fresh == NULL:
            raise MemoryError()
        _wipe(self._buf, <size_t>self._cap)
        free(self._buf)
        self._buf = fresh
        self._len = n
        self._cap = n
        return 0

    cdef void _truncate(self, Py_ssize_t n) noexcept:
        """Shorten the visible length, wiping the tail."""
        if n < self._len:
            _wipe(self._buf + n, <size_t>(self._cap - n))
            self._len = n

    def __dealloc__(self):
        if self._buf != NULL:
            _wipe(self._buf, <size_t>self._cap)
            free(self._buf)
            self._buf = NULL

    def zeroize(self):
        """Overwrite the content with zeros now (the length is kept)."""
        _wipe(self._buf, <size_t>self._cap)
        self._zeroized = True

    @property
    def zeroized(self):
        """True once ``zeroize()`` ran."""
        return self._zeroized

    def __len__(self):
        return self._len

    def __bytes__(self):
        return PyBytes_FromStringAndSize(<char *>self._buf, self._len)

    def __repr__(self):
        return f"<SecretBytes len={self._len}>"

    def __eq__(self, other):
        cdef Py_buffer view
        cdef unsigned char diff = 0
        cdef Py_ssize_t i
        try:
            PyObject_GetBuffer(other, &view, PyBUF_SIMPLE)
        except TypeError:
            return NotImplemented
        try:
            if view.len != self._len:
                return False
            for i in range(self._len):
                diff |= self._buf[i] ^ (<unsigned char *>view.buf)[i]
            return diff == 0
        finally:
            PyBuffer_Release(&view)

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        buffer.buf = self._buf
        buffer.obj = self
        buffer.len = self._len
        buffer.readonly = 0
        buffer.itemsize = 1
        buffer.format = "B"
        buffer.ndim = 1
        buffer.shape = &self._len
        buffer.strides = &_UNIT_STRIDE  # consumers that read strides (slice assignment) need one
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self._exports -= 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.zeroize()


cdef SecretBytes _secret_output(Py_ssize_t n):
    """A SecretBytes of ``n`` bytes for a module to write into (not pre-zeroed: every byte the
    caller can see is written by the module, the rest is wiped by ``_truncate``)."""
    cdef SecretBytes out = SecretBytes.__new__(SecretBytes)
    out._grow(n)
    return out
