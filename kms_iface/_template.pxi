# Attribute templates packed into one C arena that is wiped before it is freed.

cdef class _Template:
    """A CK_ATTRIBUTE array and the arena holding its values; wiped on free (CKA_VALUE safe)."""

    cdef CK_ATTRIBUTE *attrs
    cdef CK_ULONG count
    cdef unsigned char *arena
    cdef size_t arena_len

    def __dealloc__(self):
        if self.arena != NULL:
            _wipe(self.arena, self.arena_len)
            free(self.arena)
        free(self.attrs)


cdef _Template _pack(object template):
    """Encode (type, value) pairs: bool -> CK_BBOOL, int -> CK_ULONG, str -> UTF-8, buffer -> bytes."""
    cdef _Template t = _Template.__new__(_Template)
    cdef list items = list(template)
    cdef list encoded = []
    cdef Py_ssize_t n = len(items), i
    cdef size_t total = 0, offset = 0, size
    cdef Py_buffer view
    cdef unsigned long long number
    for i in range(n):
        kind, value = items[i]
        if isinstance(value, bool):
            size = sizeof(CK_BBOOL)
        elif isinstance(value, int):
            if value < 0 or value > <unsigned long long>(<CK_ULONG>-1):
                raise InvalidRequestError(
                    f"attribute 0x{kind:x}: integer value out of CK_ULONG range")
            size = sizeof(CK_ULONG)
        elif isinstance(value, str):
            value = (<str>value).encode("utf-8")
            size = len(value)
        else:
            try:
                value = memoryview(value).cast("B")
            except TypeError:
                raise InvalidRequestError(
                    f"attribute 0x{kind:x}: value must be bool, int, str or a bytes-like "
                    f"object, not {type(value).__name__}") from None
            size = len(value)
        encoded.append((kind, value, size))
        total += (size + 7) & ~(<size_t>7)
    t.count = <CK_ULONG>n
    t.attrs = <CK_ATTRIBUTE *>malloc(sizeof(CK_ATTRIBUTE) * (n if n else 1))
    t.arena = <unsigned char *>malloc(total if total else 1)
    t.arena_len = total
    if t.attrs == NULL or t.arena == NULL:
        raise MemoryError()
    for i in range(n):
        kind, value, size = encoded[i]
        t.attrs[i].type = <CK_ATTRIBUTE_TYPE>kind
        t.attrs[i].pValue = t.arena + offset
        t.attrs[i].ulValueLen = <CK_ULONG>size
        if isinstance(value, bool):
            (<CK_BBOOL *>(t.arena + offset))[0] = 1 if value else 0
        elif isinstance(value, int):
            number = value
            (<CK_ULONG *>(t.arena + offset))[0] = <CK_ULONG>number
        elif size:
            PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
            memcpy(t.arena + offset, view.buf, size)
            PyBuffer_Release(&view)
        offset += (size + 7) & ~(<size_t>7)
    return t
