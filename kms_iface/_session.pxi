# Sessions: every operation the core offers, each C call made without the GIL.

cdef enum:
    _OP_NONE = 0
    _OP_ENCRYPT = 1
    _OP_DECRYPT = 2
    _OP_SIGN = 3
    # Single-part operations left open (CKR_BUFFER_TOO_SMALL): no Final call can end them.
    _OP_ENCRYPT_ONE = 4
    _OP_DECRYPT_ONE = 5
    _CKF_ENCRYPT = 0x100
    _CKF_DECRYPT = 0x200
    _CKF_SIGN = 0x800
    _CKR_OPERATION_ACTIVE = 0x90
    _CKR_SESSION_CLOSED = 0xB0
    _CKR_SESSION_HANDLE_INVALID = 0xB3
    _CKR_DEVICE_REMOVED = 0x32
    _CKR_TOKEN_NOT_PRESENT = 0xE0
    _FIRST_CALL = 0
    _SECOND_CALL = 1

ctypedef CK_RV (*_init_fn)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE) noexcept nogil
ctypedef CK_RV (*_data_fn)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) noexcept nogil
ctypedef CK_RV (*_final_fn)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG *) noexcept nogil

# The largest output a module may ask the core to allocate after CKR_BUFFER_TOO_SMALL.
cdef CK_ULONG _MAX_OUTPUT = 1UL << 34
# Room for the largest RSA modulus the core expects (8192 bits) when the size is unknown.
cdef Py_ssize_t _RSA_ROOM = 1024
cdef unsigned char _EMPTY[1]


cdef inline CK_ULONG _plausible_output(Py_ssize_t n) noexcept nogil:
    """The most a single-part AES or RSA operation on ``n`` bytes can output (with margin):
    a module asking for more after CKR_BUFFER_TOO_SMALL is not believed."""
    return <CK_ULONG>n + 2 * _AES_BLOCK + <CK_ULONG>_RSA_ROOM

# Attribute values returned as SecretBytes: CKA_VALUE and the RSA private components.
cdef frozenset _SECRET_ATTRS = frozenset({0x11, 0x123, 0x124, 0x125, 0x126, 0x127, 0x128})
# CK_BBOOL attributes, decoded to bool.
cdef frozenset _BOOL_ATTRS = frozenset({
    0x1, 0x2, 0x86, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B, 0x10C,
    0x162, 0x163, 0x164, 0x165, 0x170, 0x171, 0x172, 0x202, 0x210})
# CK_ULONG attributes, decoded to int.
cdef frozenset _ULONG_ATTRS = frozenset({0x0, 0x80, 0x100, 0x121, 0x161, 0x166})


cdef inline unsigned char *_ptr(Py_buffer *view) noexcept nogil:
    return <unsigned char *>view.buf if view.len else _EMPTY


cdef Py_ssize_t _encrypted_size(Mechanism m, Py_ssize_t n) except -2:
    """The exact output size when the mechanism makes it predictable, else -1."""
    cdef CK_MECHANISM_TYPE t = m.mech.mechanism
    if t == CKM_AES_GCM:
        return n + m.tag_len
    if t == CKM_AES_CBC_PAD:
        return (n // _AES_BLOCK + 1) * _AES_BLOCK
    if t == CKM_AES_CBC:
        if n % _AES_BLOCK:
            raise InvalidRequestError(
                f"AES-CBC without padding needs a multiple of 16 bytes, got {n}")
        return n
    return -1


cdef Py_ssize_t _decrypted_size(Mechanism m, Py_ssize_t n) except -2:
    """The output room a module may demand (the input size: SoftHSM2 asks for it even for
    GCM, whose plaintext is shorter) when predictable, else -1; rejects short input."""
    cdef CK_MECHANISM_TYPE t = m.mech.mechanism
    if t == CKM_AES_GCM:
        if n < m.tag_len:
            raise InvalidRequestError(
                f"AES-GCM ciphertext is {n} bytes, shorter than its {m.tag_len}-byte tag")
        return n
    if t == CKM_AES_CBC or t == CKM_AES_CBC_PAD:
        if n == 0 or n % _AES_BLOCK:
            raise InvalidRequestError(
                f"AES-CBC ciphertext must be a non-empty multiple of 16 bytes, got {n}")
        return n
    return -1


cdef class Session:
    """One PKCS#11 session. Use it from one thread at a time (the pool guarantees that).

    Closing a session never logs out. A session from before a fork or a re-initialisation is
    stale: its calls raise SessionHandleInvalidError without reaching the module.
    """

    cdef Library _lib
    cdef CK_FUNCTION_LIST *_fl
    cdef CK_SESSION_HANDLE _h
    cdef CK_SLOT_ID _slot
    cdef int _epoch
    cdef bint _closed
    cdef int _op
    cdef Mechanism _op_mech

    @staticmethod
    cdef Session _new(Library lib, CK_SESSION_HANDLE h, CK_SLOT_ID slot):
        cdef Session s = Session.__new__(Session)
        s._lib = lib
        s._fl = lib._fl
        s._h = h
        s._slot = slot
        s._epoch = lib._epoch
        return s

    def __dealloc__(self):
        # A session nobody references any more is closed, so a dropped raw session cannot leak.
        if self._closed or self._lib is None:
            return
        if self._epoch == self._lib._epoch and self._lib._fl != NULL:
            with nogil:
                self._fl.C_CloseSession(self._h)

    def __repr__(self):
        return f"<Session handle={self._h} slot={self._slot}{' closed' if self._closed else ''}>"

    @property
    def handle(self):
        return self._h

    @property
    def slot_id(self):
        return self._slot

    @property
    def library(self):
        return self._lib

    @property
    def closed(self):
        return self._closed

    @property
    def stale(self):
        """True when the module was re-initialised (fork, finalize) since this session opened."""
        return self._epoch != self._lib._epoch or self._lib._fl == NULL

    @property
    def operation_active(self):
        """True while a multi-part operation (or an unfinished single-part one) is open."""
        return self._op != _OP_NONE

    cdef inline int _enter(self, str function) except -1:
        if self._closed:
            raise pkcs11_error(_CKR_SESSION_CLOSED, function)
        if self._epoch != self._lib._epoch or self._lib._fl == NULL:
            raise pkcs11_error(_CKR_SESSION_HANDLE_INVALID, function)
        self._lib._calls += 1
        return 0

    cdef inline void _leave(self) noexcept:
        self._lib._calls -= 1

    def close(self):
        """C_CloseSession (idempotent). Never logs out; a stale session is just forgotten.

        A failure that leaves the session open (anything but a lost session) raises and keeps
        it open, so that closing it can be tried again.
        """
        cdef CK_RV rv
        if self._closed:
            return
        self._closed = True
        if self._epoch != self._lib._epoch or self._lib._fl == NULL:
            return
        self._lib._calls += 1
        with nogil:
            rv = self._fl.C_CloseSession(self._h)
        self._leave()
        if rv != CKR_OK and not (
            rv == _CKR_SESSION_HANDLE_INVALID or rv == _CKR_SESSION_CLOSED
            or rv == _CKR_DEVICE_REMOVED or rv == _CKR_TOKEN_NOT_PRESENT
        ):
            self._closed = False
        _check(rv, "C_CloseSession")

    def get_info(self):
        cdef CK_SESSION_INFO info
        cdef CK_RV rv
        self._enter("C_GetSessionInfo")
        with nogil:
            rv = self._fl.C_GetSessionInfo(self._h, &info)
        self._leave()
        _check(rv, "C_GetSessionInfo")
        return SessionInfo(info.slotID, info.state, info.flags, info.ulDeviceError)

    def login(self, CK_ULONG user_type, pin):
        """C_Login; returns False when the user was already logged in. ``pin=None`` uses a
        protected authentication path (PIN pad)."""
        cdef Py_buffer view
        cdef CK_RV rv
        cdef bint has_pin = pin is not None
        if has_pin:
            PyObject_GetBuffer(pin, &view, PyBUF_SIMPLE)
        try:
            self._enter("C_Login")
            with nogil:
                if has_pin:
                    rv = self._fl.C_Login(self._h, user_type, _ptr(&view), <CK_ULONG>view.len)
                else:
                    rv = self._fl.C_Login(self._h, user_type, NULL, 0)
            self._leave()
        finally:
            if has_pin:
                PyBuffer_Release(&view)
        if rv == CKR_USER_ALREADY_LOGGED_IN:
            return False
        _check(rv, "C_Login")
        return True

    def logout(self):
        """C_Logout: logs the whole token out, for every session of this application."""
        cdef CK_RV rv
        self._enter("C_Logout")
        with nogil:
            rv = self._fl.C_Logout(self._h)
        self._leave()
        _check(rv, "C_Logout")

    # -- objects -----------------------------------------------------------------------------

    def generate_key(self, mechanism, template):
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef _Template t = _pack(template)
        cdef CK_OBJECT_HANDLE key
        cdef CK_RV rv
        self._enter("C_GenerateKey")
        with nogil:
            rv = self._fl.C_GenerateKey(self._h, &m.mech, t.attrs, t.count, &key)
        self._leave()
        _check(rv, "C_GenerateKey")
        return key

    def generate_key_pair(self, mechanism, public_template, private_template):
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef _Template pub = _pack(public_template)
        cdef _Template priv = _pack(private_template)
        cdef CK_OBJECT_HANDLE hpub, hpriv
        cdef CK_RV rv
        self._enter("C_GenerateKeyPair")
        with nogil:
            rv = self._fl.C_GenerateKeyPair(
                self._h, &m.mech, pub.attrs, pub.count, priv.attrs, priv.count, &hpub, &hpriv)
        self._leave()
        _check(rv, "C_GenerateKeyPair")
        return hpub, hpriv

    def create_object(self, template):
        cdef _Template t = _pack(template)
        cdef CK_OBJECT_HANDLE obj
        cdef CK_RV rv
        self._enter("C_CreateObject")
        with nogil:
            rv = self._fl.C_CreateObject(self._h, t.attrs, t.count, &obj)
        self._leave()
        _check(rv, "C_CreateObject")
        return obj

    def destroy_object(self, CK_OBJECT_HANDLE handle):
        cdef CK_RV rv
        self._enter("C_DestroyObject")
        with nogil:
            rv = self._fl.C_DestroyObject(self._h, handle)
        self._leave()
        _check(rv, "C_DestroyObject")

    def find_objects(self, template, CK_ULONG batch=32, limit=None):
        """Every handle matching the template, in batches; C_FindObjectsFinal always runs."""
        cdef _Template t = _pack(template)
        cdef CK_OBJECT_HANDLE *handles
        cdef CK_ULONG got = 0, i
        cdef CK_RV rv, rv_final
        cdef list found = []
        if batch < 1:
            raise InvalidRequestError("find batch size must be at least 1")
        self._enter("C_FindObjectsInit")
        with nogil:
            rv = self._fl.C_FindObjectsInit(self._h, t.attrs, t.count)
        self._leave()
        _check(rv, "C_FindObjectsInit")
        handles = <CK_OBJECT_HANDLE *>malloc(sizeof(CK_OBJECT_HANDLE) * batch)
        try:
            if handles == NULL:
                raise MemoryError()
            while True:
                self._lib._calls += 1
                with nogil:
                    rv = self._fl.C_FindObjects(self._h, handles, batch, &got)
                self._leave()
                if rv != CKR_OK:
                    break
                if got > batch:
                    raise HsmError(f"C_FindObjects returned {got} handles for a batch of {batch}")
                for i in range(got):
                    found.append(handles[i])
                if got < batch or (limit is not None and len(found) >= limit):
                    break
        finally:
            free(handles)
            self._lib._calls += 1
            with nogil:
                rv_final = self._fl.C_FindObjectsFinal(self._h)
            self._leave()
        _check(rv, "C_FindObjects")
        _check(rv_final, "C_FindObjectsFinal")
        return found if limit is None else found[:limit]

    def get_attributes(self, CK_OBJECT_HANDLE handle, types):
        """Read several attributes in one call (two when a length must be learnt first).

        Booleans come back as bool, CK_ULONG values as int, secret values as SecretBytes,
        others as bytes; an attribute that is absent or sensitive comes back as None.
        """
        cdef list kinds = list(types)
        cdef Py_ssize_t n = len(kinds), i
        cdef CK_ATTRIBUTE *attrs = <CK_ATTRIBUTE *>malloc(sizeof(CK_ATTRIBUTE) * (n if n else 1))
        cdef CK_ULONG *fixed = <CK_ULONG *>malloc(sizeof(CK_ULONG) * (n if n else 1))
        cdef list values = [None] * n
        cdef bint probe = False
        cdef CK_RV rv
        cdef CK_ULONG length
        try:
            if attrs == NULL or fixed == NULL:
                raise MemoryError()
            for i in range(n):
                attrs[i].type = <CK_ATTRIBUTE_TYPE>kinds[i]
                if kinds[i] in _BOOL_ATTRS or kinds[i] in _ULONG_ATTRS:
                    fixed[i] = 0
                    attrs[i].pValue = &fixed[i]
                    attrs[i].ulValueLen = sizeof(CK_BBOOL) if kinds[i] in _BOOL_ATTRS else sizeof(CK_ULONG)
                else:
                    attrs[i].pValue = NULL
                    attrs[i].ulValueLen = 0
                    probe = True
            if probe:
                self._get_attribute_values(handle, attrs, n, True)
                for i in range(n):
                    if attrs[i].pValue != NULL:
                        continue
                    length = attrs[i].ulValueLen
                    if length == CK_UNAVAILABLE_INFORMATION:
                        continue
                    if length > <CK_ULONG>MAX_ATTRIBUTE_LEN:
                        raise HsmError(
                            f"C_GetAttributeValue reported an implausible length {length} "
                            f"for attribute 0x{kinds[i]:x}")
                    if kinds[i] in _SECRET_ATTRS:
                        values[i] = _secret_output(<Py_ssize_t>length)
                        attrs[i].pValue = (<SecretBytes>values[i])._buf
                    else:
                        values[i] = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(length if length else 1))
                        attrs[i].pValue = PyBytes_AS_STRING(values[i])
            self._get_attribute_values(handle, attrs, n, False)
            for i in range(n):
                length = attrs[i].ulValueLen
                if attrs[i].pValue == NULL or length == CK_UNAVAILABLE_INFORMATION:
                    values[i] = None
                elif attrs[i].pValue == &fixed[i]:
                    if length != (sizeof(CK_BBOOL) if kinds[i] in _BOOL_ATTRS else sizeof(CK_ULONG)):
                        raise HsmError(
                            f"C_GetAttributeValue returned {length} bytes for fixed-size "
                            f"attribute 0x{kinds[i]:x}")
                    if kinds[i] in _BOOL_ATTRS:
                        values[i] = (<CK_BBOOL *>&fixed[i])[0] != 0
                    else:
                        values[i] = fixed[i]
                elif isinstance(values[i], SecretBytes):
                    if length > <CK_ULONG>len(values[i]):
                        raise HsmError(f"C_GetAttributeValue overran attribute 0x{kinds[i]:x}")
                    (<SecretBytes>values[i])._truncate(<Py_ssize_t>length)
                else:
                    if length > <CK_ULONG>len(values[i]):
                        raise HsmError(f"C_GetAttributeValue overran attribute 0x{kinds[i]:x}")
                    values[i] = values[i][:length]
            return values
        finally:
            free(attrs)
            free(fixed)

    cdef int _get_attribute_values(self, CK_OBJECT_HANDLE handle, CK_ATTRIBUTE *attrs,
                                   Py_ssize_t n, bint probing) except -1:
        cdef CK_RV rv
        cdef Py_ssize_t i
        self._enter("C_GetAttributeValue")
        with nogil:
            rv = self._fl.C_GetAttributeValue(self._h, handle, attrs, <CK_ULONG>n)
        self._leave()
        if rv == CKR_ATTRIBUTE_SENSITIVE or rv == CKR_ATTRIBUTE_TYPE_INVALID:
            for i in range(n):
                if attrs[i].ulValueLen == CK_UNAVAILABLE_INFORMATION and not probing:
                    attrs[i].pValue = NULL
            return 0
        _check(rv, "C_GetAttributeValue")
        return 0

    def set_attributes(self, CK_OBJECT_HANDLE handle, template):
        cdef _Template t = _pack(template)
        cdef CK_RV rv
        self._enter("C_SetAttributeValue")
        with nogil:
            rv = self._fl.C_SetAttributeValue(self._h, handle, t.attrs, t.count)
        self._leave()
        _check(rv, "C_SetAttributeValue")

    # -- single-part encryption --------------------------------------------------------------

    cdef CK_RV _one_shot(self, bint decrypt, Mechanism m, CK_OBJECT_HANDLE key,
                         unsigned char *data, CK_ULONG n, unsigned char *out,
                         CK_ULONG *outlen, int *stage) noexcept nogil:
        m._restore()
        return self._one_shot_raw(decrypt, &m.mech, key, data, n, out, outlen, stage)

    cdef CK_RV _one_shot_raw(self, bint decrypt, CK_MECHANISM *mech, CK_OBJECT_HANDLE key,
                             unsigned char *data, CK_ULONG n, unsigned char *out,
                             CK_ULONG *outlen, int *stage) noexcept nogil:
        cdef CK_RV rv
        if decrypt:
            rv = self._fl.C_DecryptInit(self._h, mech, key)
        else:
            rv = self._fl.C_EncryptInit(self._h, mech, key)
        if rv != CKR_OK:
            stage[0] = _FIRST_CALL
            return rv
        stage[0] = _SECOND_CALL
        if decrypt:
            return self._fl.C_Decrypt(self._h, data, n, out, outlen)
        return self._fl.C_Encrypt(self._h, data, n, out, outlen)

    cdef int _fail(self, CK_RV rv, int stage, bint decrypt) except -1:
        if stage == _FIRST_CALL:
            _check(rv, "C_DecryptInit" if decrypt else "C_EncryptInit")
        _check(rv, "C_Decrypt" if decrypt else "C_Encrypt")
        return 0

    cdef int _end_abandoned(self, bint decrypt, unsigned char *data, CK_ULONG n,
                            CK_ULONG needed) except -1:
        """After a resized call still answered CKR_BUFFER_TOO_SMALL: end the single-part
        operation into scratch memory when the module's length is plausible, else leave it
        marked open, so that ``cancel`` fails and a pool closes the session."""
        if needed <= _plausible_output(n):
            return self._finish_abandoned(decrypt, data, n, needed)
        self._op = _OP_DECRYPT_ONE if decrypt else _OP_ENCRYPT_ONE
        return 0

    cdef int _finish_abandoned(self, bint decrypt, unsigned char *data, CK_ULONG n,
                               CK_ULONG needed) except -1:
        """End a single-part operation left open by CKR_BUFFER_TOO_SMALL; output is wiped."""
        cdef unsigned char *scratch = <unsigned char *>malloc(needed if needed else 1)
        cdef CK_ULONG outlen = needed
        cdef CK_RV rv
        if scratch == NULL:
            self._op = _OP_DECRYPT_ONE if decrypt else _OP_ENCRYPT_ONE
            raise MemoryError()
        self._enter("C_Decrypt" if decrypt else "C_Encrypt")
        with nogil:
            if decrypt:
                rv = self._fl.C_Decrypt(self._h, data, n, scratch, &outlen)
            else:
                rv = self._fl.C_Encrypt(self._h, data, n, scratch, &outlen)
            _wipe(scratch, needed)
            free(scratch)
        self._leave()
        if rv == CKR_BUFFER_TOO_SMALL:
            self._op = _OP_DECRYPT_ONE if decrypt else _OP_ENCRYPT_ONE
        return 0

    def encrypt(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key, data):
        """Init + one C_Encrypt into an output of the predicted size (no size probe)."""
        cdef Py_buffer din
        cdef Py_ssize_t size
        cdef CK_ULONG outlen
        cdef CK_RV rv
        cdef int stage
        cdef bytes out
        cdef unsigned char *dst
        PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            size = _encrypted_size(mechanism, din.len)
            if size < 0:
                size = din.len + _RSA_ROOM
            out = PyBytes_FromStringAndSize(NULL, size)
            dst = <unsigned char *>PyBytes_AS_STRING(out)
            outlen = <CK_ULONG>size
            self._enter("C_Encrypt")
            with nogil:
                rv = self._one_shot(False, mechanism, key, _ptr(&din), <CK_ULONG>din.len,
                                    dst, &outlen, &stage)
            self._leave()
            if (rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL
                    and outlen <= _plausible_output(din.len)):
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>outlen)
                dst = <unsigned char *>PyBytes_AS_STRING(out)
                self._enter("C_Encrypt")
                with nogil:
                    rv = self._fl.C_Encrypt(self._h, _ptr(&din), <CK_ULONG>din.len, dst, &outlen)
                self._leave()
            if rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL:
                self._end_abandoned(False, _ptr(&din), <CK_ULONG>din.len, outlen)
            self._fail(rv, stage, False)
        finally:
            PyBuffer_Release(&din)
        return out if outlen == <CK_ULONG>len(out) else out[:outlen]

    def decrypt(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key, data):
        """Init + one C_Decrypt into a SecretBytes of the largest possible plaintext size."""
        cdef Py_buffer din
        cdef Py_ssize_t size
        cdef CK_ULONG outlen
        cdef CK_RV rv
        cdef int stage
        cdef SecretBytes out
        PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            size = _decrypted_size(mechanism, din.len)
            if size < 0:
                size = din.len
            out = _secret_output(size)
            outlen = <CK_ULONG>size
            self._enter("C_Decrypt")
            with nogil:
                rv = self._one_shot(True, mechanism, key, _ptr(&din), <CK_ULONG>din.len,
                                    out._buf, &outlen, &stage)
            self._leave()
            if (rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL
                    and outlen <= _plausible_output(din.len)):
                out._grow(<Py_ssize_t>outlen)
                self._enter("C_Decrypt")
                with nogil:
                    rv = self._fl.C_Decrypt(self._h, _ptr(&din), <CK_ULONG>din.len,
                                            out._buf, &outlen)
                self._leave()
            if rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL:
                self._end_abandoned(True, _ptr(&din), <CK_ULONG>din.len, outlen)
            if rv != CKR_OK:
                out.zeroize()
            self._fail(rv, stage, True)
        finally:
            PyBuffer_Release(&din)
        out._truncate(<Py_ssize_t>outlen)
        return out

    def crypt_many(self, bint decrypt, list mechanisms not None, list keys not None,
                   list inputs not None):
        """Many single-part AES operations in one pass without the GIL (see the stub)."""
        cdef Py_ssize_t count = len(inputs)
        cdef Py_ssize_t i, size, stopped, acquired = 0
        cdef Py_buffer *views
        cdef unsigned char **outs
        cdef CK_ULONG *outlens
        cdef CK_MECHANISM **mechs
        cdef CK_OBJECT_HANDLE *handles
        cdef CK_RV rv = CKR_OK
        cdef int stage = _FIRST_CALL
        cdef Mechanism m
        cdef SecretBytes secret
        cdef object out
        cdef tuple held
        if len(mechanisms) != count or len(keys) != count:
            raise InvalidRequestError("crypt_many needs one mechanism and one key per input")
        # Our own references: the C pass reads each Mechanism's parameters without the GIL,
        # while another thread could empty the caller's list.
        held = tuple(mechanisms)
        if len(held) != count:
            raise InvalidRequestError("crypt_many needs one mechanism and one key per input")
        results = [None] * count
        if count == 0:
            return results
        views = <Py_buffer *>malloc(sizeof(Py_buffer) * count)
        outs = <unsigned char **>malloc(sizeof(unsigned char *) * count)
        outlens = <CK_ULONG *>malloc(sizeof(CK_ULONG) * count)
        mechs = <CK_MECHANISM **>malloc(sizeof(CK_MECHANISM *) * count)
        handles = <CK_OBJECT_HANDLE *>malloc(sizeof(CK_OBJECT_HANDLE) * count)
        try:
            if (views == NULL or outs == NULL or outlens == NULL or mechs == NULL
                    or handles == NULL):
                raise MemoryError()
            for i in range(count):
                m = <Mechanism?>held[i]
                handles[i] = <CK_OBJECT_HANDLE?>keys[i]
                PyObject_GetBuffer(inputs[i], &views[i], PyBUF_SIMPLE)
                acquired += 1
                if decrypt:
                    size = _decrypted_size(m, views[i].len)
                else:
                    size = _encrypted_size(m, views[i].len)
                if size < 0:
                    raise InvalidRequestError(
                        "crypt_many takes only mechanisms of a predictable output size (AES)")
                if decrypt:
                    secret = _secret_output(size)
                    outs[i] = secret._buf
                    out = secret
                else:
                    out = PyBytes_FromStringAndSize(NULL, size)
                    outs[i] = <unsigned char *>PyBytes_AS_STRING(out)
                results[i] = out
                outlens[i] = <CK_ULONG>size
                m._restore()
                mechs[i] = &m.mech
            stopped = count
            self._enter("C_Decrypt" if decrypt else "C_Encrypt")
            with nogil:
                for i in range(count):
                    rv = self._one_shot_raw(decrypt, mechs[i], handles[i], _ptr(&views[i]),
                                            <CK_ULONG>views[i].len, outs[i], &outlens[i],
                                            &stage)
                    if rv != CKR_OK:
                        stopped = i
                        break
            self._leave()
            for i in range(stopped):
                out = results[i]
                if decrypt:
                    (<SecretBytes>out)._truncate(<Py_ssize_t>outlens[i])
                elif outlens[i] != <CK_ULONG>len(out):
                    results[i] = out[:outlens[i]]
            if stopped < count:
                if decrypt:
                    (<SecretBytes>results[stopped]).zeroize()
                if (rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL
                        and outlens[stopped] <= _MAX_OUTPUT):
                    self._finish_abandoned(decrypt, _ptr(&views[stopped]),
                                           <CK_ULONG>views[stopped].len, outlens[stopped])
                    results[stopped] = None
                elif rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL:
                    self._op = _OP_DECRYPT_ONE if decrypt else _OP_ENCRYPT_ONE  # for the pool
                    results[stopped] = pkcs11_error(rv, "C_Decrypt" if decrypt else "C_Encrypt")
                elif stage == _FIRST_CALL:
                    results[stopped] = pkcs11_error(
                        rv, "C_DecryptInit" if decrypt else "C_EncryptInit")
                else:
                    results[stopped] = pkcs11_error(rv, "C_Decrypt" if decrypt else "C_Encrypt")
                for i in range(stopped + 1, count):
                    results[i] = None
            return results
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            free(views)
            free(outs)
            free(outlens)
            free(mechs)
            free(handles)

    cdef Py_ssize_t _crypt_into(self, bint decrypt, Mechanism m, CK_OBJECT_HANDLE key,
                                object data, object out) except -1:
        cdef Py_buffer din, dout
        cdef Py_ssize_t size
        cdef CK_ULONG outlen
        cdef CK_RV rv
        cdef int stage
        PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(out, &dout, PyBUF_SIMPLE | PyBUF_WRITABLE)
        except BaseException:
            PyBuffer_Release(&din)
            raise
        try:
            size = _decrypted_size(m, din.len) if decrypt else _encrypted_size(m, din.len)
            if size > dout.len:
                raise InvalidRequestError(
                    f"output buffer holds {dout.len} bytes, {size} are needed")
            outlen = <CK_ULONG>dout.len
            self._enter("C_Decrypt" if decrypt else "C_Encrypt")
            with nogil:
                rv = self._one_shot(decrypt, m, key, _ptr(&din), <CK_ULONG>din.len,
                                    _ptr(&dout), &outlen, &stage)
            self._leave()
            if rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL:
                self._finish_abandoned(decrypt, _ptr(&din), <CK_ULONG>din.len, outlen)
                raise InvalidRequestError(
                    f"output buffer holds {dout.len} bytes, {outlen} are needed")
            if rv != CKR_OK and decrypt:
                _wipe(dout.buf, <size_t>dout.len)
            self._fail(rv, stage, decrypt)
            return <Py_ssize_t>outlen
        finally:
            PyBuffer_Release(&dout)
            PyBuffer_Release(&din)

    def encrypt_into(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key, data, out):
        """Encrypt into a caller buffer; returns the number of bytes written."""
        return self._crypt_into(False, mechanism, key, data, out)

    def decrypt_into(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key, data, out):
        """Decrypt into a caller buffer, which must be as long as the input for AES (modules
        may demand that room even for GCM); returns the plaintext length."""
        return self._crypt_into(True, mechanism, key, data, out)

    # -- multi-part encryption ---------------------------------------------------------------

    def encrypt_init(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key):
        self._part_init(False, mechanism, key)

    def decrypt_init(self, Mechanism mechanism not None, CK_OBJECT_HANDLE key):
        self._part_init(True, mechanism, key)

    cdef int _part_init(self, bint decrypt, Mechanism m, CK_OBJECT_HANDLE key) except -1:
        cdef CK_RV rv
        self._enter("C_DecryptInit" if decrypt else "C_EncryptInit")
        with nogil:
            m._restore()
            if decrypt:
                rv = self._fl.C_DecryptInit(self._h, &m.mech, key)
            else:
                rv = self._fl.C_EncryptInit(self._h, &m.mech, key)
        self._leave()
        _check(rv, "C_DecryptInit" if decrypt else "C_EncryptInit")
        self._op = _OP_DECRYPT if decrypt else _OP_ENCRYPT
        self._op_mech = m
        return 0

    cdef object _part(self, bint decrypt, object data, object out, bint final):
        """One Update (``data``) or Final call, into ``out`` or a fresh buffer; BUFFER_TOO_SMALL
        resizes a fresh buffer once. Returns bytes/SecretBytes, or the count for ``out``."""
        cdef Py_buffer din, dout
        cdef bint has_out = out is not None
        cdef Py_ssize_t cap
        cdef CK_ULONG outlen
        cdef CK_RV rv
        cdef object result = None
        cdef unsigned char *dst
        cdef str function = ("C_DecryptFinal" if decrypt else "C_EncryptFinal") if final else (
            "C_DecryptUpdate" if decrypt else "C_EncryptUpdate")
        cdef _data_fn update = self._fl.C_DecryptUpdate if decrypt else self._fl.C_EncryptUpdate
        cdef _final_fn finish = self._fl.C_DecryptFinal if decrypt else self._fl.C_EncryptFinal
        if self._op != (_OP_DECRYPT if decrypt else _OP_ENCRYPT):
            raise InvalidRequestError(f"{function} without a matching *_init on this session")
        din.len = 0
        din.buf = NULL
        if not final:
            PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            for attempt in range(2):
                if has_out:
                    PyObject_GetBuffer(out, &dout, PyBUF_SIMPLE | PyBUF_WRITABLE)
                    dst = _ptr(&dout)
                    outlen = <CK_ULONG>dout.len
                    PyBuffer_Release(&dout)
                else:
                    if result is None:
                        cap = din.len + 2 * _AES_BLOCK + _RSA_ROOM
                    else:
                        cap = <Py_ssize_t>outlen
                    result = _secret_output(cap) if decrypt else PyBytes_FromStringAndSize(NULL, cap)
                    dst = (<SecretBytes>result)._buf if decrypt else <unsigned char *>PyBytes_AS_STRING(result)
                    outlen = <CK_ULONG>cap
                self._enter(function)
                with nogil:
                    if final:
                        rv = finish(self._h, dst, &outlen)
                    else:
                        rv = update(self._h, _ptr(&din), <CK_ULONG>din.len, dst, &outlen)
                self._leave()
                if rv != CKR_BUFFER_TOO_SMALL or has_out or outlen > _MAX_OUTPUT:
                    break
            if rv != CKR_OK and rv != CKR_BUFFER_TOO_SMALL:
                self._op = _OP_NONE
                self._op_mech = None
            elif rv == CKR_OK and final:
                self._op = _OP_NONE
                self._op_mech = None
            _check(rv, function)
        finally:
            if not final:
                PyBuffer_Release(&din)
        if has_out:
            return <Py_ssize_t>outlen
        if decrypt:
            (<SecretBytes>result)._truncate(<Py_ssize_t>outlen)
            return result
        return result if outlen == <CK_ULONG>len(result) else result[:outlen]

    def encrypt_update(self, data):
        return self._part(False, data, None, False)

    def encrypt_update_into(self, data, out):
        return self._part(False, data, out, False)

    def encrypt_final(self):
        return self._part(False, None, None, True)

    def decrypt_update(self, data):
        return self._part(True, data, None, False)

    def decrypt_update_into(self, data, out):
        return self._part(True, data, out, False)

    def decrypt_final(self):
        return self._part(True, None, None, True)

    def cancel(self):
        """End an open multi-part operation, discarding (and wiping) what it would output.

        Uses C_SessionCancel on 3.x modules, else runs the Final call into scratch memory. A
        single-part or sign operation left open (the module kept answering
        CKR_BUFFER_TOO_SMALL) cannot be ended that way: ``OperationActiveError``, and the
        session should be closed (a pool does).
        """
        cdef CK_RV rv
        cdef int op = self._op
        cdef bint decrypt = op == _OP_DECRYPT or op == _OP_DECRYPT_ONE
        cdef CK_FLAGS flags = _CKF_DECRYPT if decrypt else (_CKF_SIGN if op == _OP_SIGN else _CKF_ENCRYPT)
        if op == _OP_NONE:
            return
        if self._lib._fl3 != NULL:
            self._enter("C_SessionCancel")
            with nogil:
                rv = self._lib._fl3.C_SessionCancel(self._h, flags)
            self._leave()
            if rv == CKR_OK:
                self._op = _OP_NONE
                self._op_mech = None
                return
        if op != _OP_ENCRYPT and op != _OP_DECRYPT:
            # A single-part or sign operation: no Final call ends it. Still marked open, so
            # that the owner (a pool) closes the session.
            raise pkcs11_error(_CKR_OPERATION_ACTIVE, "C_SessionCancel")
        try:
            result = self._part(decrypt, None, None, True)
            if decrypt:
                (<SecretBytes>result).zeroize()
        except HsmError:
            pass  # an error other than BUFFER_TOO_SMALL ends a multi-part operation
        self._op = _OP_NONE
        self._op_mech = None

    # -- signatures, wrapping, random -------------------------------------------------------

    def sign(self, mechanism, CK_OBJECT_HANDLE key, data):
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef Py_buffer din
        cdef CK_ULONG outlen = <CK_ULONG>_RSA_ROOM
        cdef CK_RV rv
        cdef int stage
        cdef bytes out = PyBytes_FromStringAndSize(NULL, _RSA_ROOM)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            self._enter("C_Sign")
            with nogil:
                stage = _FIRST_CALL
                m._restore()
                rv = self._fl.C_SignInit(self._h, &m.mech, key)
                if rv == CKR_OK:
                    stage = _SECOND_CALL
                    rv = self._fl.C_Sign(self._h, _ptr(&din), <CK_ULONG>din.len, dst, &outlen)
            self._leave()
            if rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL and outlen <= _MAX_OUTPUT:
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>outlen)
                dst = <unsigned char *>PyBytes_AS_STRING(out)
                self._enter("C_Sign")
                with nogil:
                    rv = self._fl.C_Sign(self._h, _ptr(&din), <CK_ULONG>din.len, dst, &outlen)
                self._leave()
            if rv == CKR_BUFFER_TOO_SMALL and stage == _SECOND_CALL:
                self._op = _OP_SIGN  # still open: only C_SessionCancel or closing ends it
            _check(rv, "C_SignInit" if stage == _FIRST_CALL else "C_Sign")
        finally:
            PyBuffer_Release(&din)
        return out[:outlen]

    def verify(self, mechanism, CK_OBJECT_HANDLE key, data, signature):
        """True for a valid signature, False for an invalid one; other failures raise."""
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef Py_buffer din, dsig
        cdef CK_RV rv
        cdef int stage
        PyObject_GetBuffer(data, &din, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(signature, &dsig, PyBUF_SIMPLE)
        except BaseException:
            PyBuffer_Release(&din)
            raise
        try:
            self._enter("C_Verify")
            with nogil:
                stage = _FIRST_CALL
                m._restore()
                rv = self._fl.C_VerifyInit(self._h, &m.mech, key)
                if rv == CKR_OK:
                    stage = _SECOND_CALL
                    rv = self._fl.C_Verify(self._h, _ptr(&din), <CK_ULONG>din.len,
                                           _ptr(&dsig), <CK_ULONG>dsig.len)
            self._leave()
        finally:
            PyBuffer_Release(&dsig)
            PyBuffer_Release(&din)
        if stage == _SECOND_CALL and (rv == CKR_SIGNATURE_INVALID or rv == CKR_SIGNATURE_LEN_RANGE):
            return False
        _check(rv, "C_VerifyInit" if stage == _FIRST_CALL else "C_Verify")
        return True

    def wrap_key(self, mechanism, CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key):
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef CK_ULONG outlen = <CK_ULONG>(4 * _RSA_ROOM)
        cdef CK_RV rv
        cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>outlen)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        for attempt in range(2):
            self._enter("C_WrapKey")
            with nogil:
                m._restore()
                rv = self._fl.C_WrapKey(self._h, &m.mech, wrapping_key, key, dst, &outlen)
            self._leave()
            if rv != CKR_BUFFER_TOO_SMALL or outlen > _MAX_OUTPUT:
                break
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>outlen)
            dst = <unsigned char *>PyBytes_AS_STRING(out)
        _check(rv, "C_WrapKey")
        return out[:outlen]

    def unwrap_key(self, mechanism, CK_OBJECT_HANDLE unwrapping_key, wrapped, template):
        cdef Mechanism m = _as_mechanism(mechanism)
        cdef _Template t = _pack(template)
        cdef Py_buffer din
        cdef CK_OBJECT_HANDLE obj
        cdef CK_RV rv
        PyObject_GetBuffer(wrapped, &din, PyBUF_SIMPLE)
        try:
            self._enter("C_UnwrapKey")
            with nogil:
                m._restore()
                rv = self._fl.C_UnwrapKey(self._h, &m.mech, unwrapping_key, _ptr(&din),
                                          <CK_ULONG>din.len, t.attrs, t.count, &obj)
            self._leave()
        finally:
            PyBuffer_Release(&din)
        _check(rv, "C_UnwrapKey")
        return obj

    def generate_random(self, Py_ssize_t length):
        cdef bytes out
        cdef unsigned char *dst
        cdef CK_RV rv
        if length < 0:
            raise InvalidRequestError("random length must not be negative")
        if length == 0:
            return b""
        out = PyBytes_FromStringAndSize(NULL, length)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        self._enter("C_GenerateRandom")
        with nogil:
            rv = self._fl.C_GenerateRandom(self._h, dst, <CK_ULONG>length)
        self._leave()
        _check(rv, "C_GenerateRandom")
        return out

    def generate_random_into(self, out):
        cdef Py_buffer dout
        cdef CK_RV rv
        PyObject_GetBuffer(out, &dout, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            self._enter("C_GenerateRandom")
            with nogil:
                rv = self._fl.C_GenerateRandom(self._h, _ptr(&dout), <CK_ULONG>dout.len)
            self._leave()
        finally:
            PyBuffer_Release(&dout)
        _check(rv, "C_GenerateRandom")
        return dout.len

    def seed_random(self, seed):
        cdef Py_buffer din
        cdef CK_RV rv
        PyObject_GetBuffer(seed, &din, PyBUF_SIMPLE)
        try:
            if din.len == 0:
                return
            self._enter("C_SeedRandom")
            with nogil:
                rv = self._fl.C_SeedRandom(self._h, _ptr(&din), <CK_ULONG>din.len)
            self._leave()
        finally:
            PyBuffer_Release(&din)
        _check(rv, "C_SeedRandom")
