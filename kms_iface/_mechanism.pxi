# CK_MECHANISM objects owning their parameter blocks for the length of every call.

cdef int _GCM_TAG_BITS[7]
_GCM_TAG_BITS[:] = [32, 64, 96, 104, 112, 120, 128]

cdef enum:
    _AES_BLOCK = 16
    _MAX_IV = 128


cdef class Mechanism:
    """A mechanism and its parameters; the module may read and write them during a call.

    The AES IV and GCM parameter block are restored from a pristine copy before every call, so
    a module that writes into them (some write their own IV back) cannot change a reused
    ``Mechanism``.

    Use the constructors (``aes_gcm``, ``aes_cbc``, ``rsa_oaep``, ``rsa_pss``) for the
    parameterised mechanisms; ``Mechanism(type, parameter)`` copies a raw parameter block.
    """

    cdef CK_MECHANISM mech
    cdef CK_GCM_PARAMS gcm
    cdef CK_GCM_PARAMS gcm0
    cdef CK_RSA_PKCS_OAEP_PARAMS oaep
    cdef CK_RSA_PKCS_PSS_PARAMS pss
    cdef unsigned char iv[_MAX_IV]
    cdef unsigned char iv0[_MAX_IV]
    cdef Py_ssize_t iv_len
    cdef unsigned char *raw
    cdef Py_ssize_t raw_len
    cdef Py_buffer extra
    cdef bint has_extra
    cdef int tag_len

    def __cinit__(self, mechanism=None, parameter=None):
        cdef Py_buffer view
        if mechanism is None:
            return
        self.mech.mechanism = <CK_MECHANISM_TYPE>mechanism
        if parameter is not None:
            PyObject_GetBuffer(parameter, &view, PyBUF_SIMPLE)
            try:
                self.raw = <unsigned char *>malloc(<size_t>view.len if view.len else 1)
                if self.raw == NULL:
                    raise MemoryError()
                memcpy(self.raw, view.buf, <size_t>view.len)
                self.raw_len = view.len
            finally:
                PyBuffer_Release(&view)
            self.mech.pParameter = self.raw
            self.mech.ulParameterLen = <CK_ULONG>self.raw_len

    def __dealloc__(self):
        if self.has_extra:
            PyBuffer_Release(&self.extra)
        if self.raw != NULL:
            free(self.raw)

    @property
    def type(self):
        """The CKM_ value."""
        return self.mech.mechanism

    def __repr__(self):
        return f"<Mechanism 0x{self.mech.mechanism:x}>"

    cdef inline void _restore(self) noexcept nogil:
        """Undo whatever a module wrote into the IV or the GCM parameters."""
        if self.iv_len:
            memcpy(self.iv, self.iv0, <size_t>self.iv_len)
            if self.mech.pParameter == <void *>&self.gcm:
                self.gcm = self.gcm0

    cdef int _hold(self, object buffer) except -1:
        PyObject_GetBuffer(buffer, &self.extra, PyBUF_SIMPLE)
        self.has_extra = True
        return 0

    @staticmethod
    def aes_gcm(iv, aad=None, int tag_bits=128):
        """CKM_AES_GCM with an IV of 1-128 bytes, optional AAD and a standard tag length."""
        cdef Mechanism m = Mechanism.__new__(Mechanism)
        cdef Py_buffer view
        cdef int i
        for i in range(7):
            if _GCM_TAG_BITS[i] == tag_bits:
                break
        else:
            raise InvalidRequestError(
                f"AES-GCM tag length must be 32, 64, 96, 104, 112, 120 or 128 bits, got {tag_bits}")
        PyObject_GetBuffer(iv, &view, PyBUF_SIMPLE)
        try:
            if view.len < 1 or view.len > _MAX_IV:
                raise InvalidRequestError(
                    f"AES-GCM IV must be 1 to {_MAX_IV} bytes, got {view.len}")
            memcpy(m.iv, view.buf, <size_t>view.len)
            m.gcm.ulIvLen = <CK_ULONG>view.len
        finally:
            PyBuffer_Release(&view)
        m.gcm.pIv = m.iv
        m.gcm.ulIvBits = m.gcm.ulIvLen * 8
        if aad is not None:
            m._hold(aad)
            m.gcm.pAAD = <CK_BYTE *>m.extra.buf
            m.gcm.ulAADLen = <CK_ULONG>m.extra.len
        m.gcm.ulTagBits = <CK_ULONG>tag_bits
        m.tag_len = tag_bits // 8
        m.mech.mechanism = CKM_AES_GCM
        m.mech.pParameter = &m.gcm
        m.mech.ulParameterLen = sizeof(CK_GCM_PARAMS)
        m.gcm0 = m.gcm
        m.iv_len = <Py_ssize_t>m.gcm.ulIvLen
        memcpy(m.iv0, m.iv, <size_t>m.iv_len)
        return m

    @staticmethod
    def aes_cbc(iv, bint pad=False):
        """CKM_AES_CBC (or CKM_AES_CBC_PAD with ``pad``) with a 16-byte IV."""
        cdef Mechanism m = Mechanism.__new__(Mechanism)
        cdef Py_buffer view
        PyObject_GetBuffer(iv, &view, PyBUF_SIMPLE)
        try:
            if view.len != _AES_BLOCK:
                raise InvalidRequestError(f"AES-CBC IV must be 16 bytes, got {view.len}")
            memcpy(m.iv, view.buf, _AES_BLOCK)
        finally:
            PyBuffer_Release(&view)
        m.mech.mechanism = CKM_AES_CBC_PAD if pad else CKM_AES_CBC
        m.mech.pParameter = m.iv
        m.mech.ulParameterLen = _AES_BLOCK
        m.iv_len = _AES_BLOCK
        memcpy(m.iv0, m.iv, _AES_BLOCK)
        return m

    @staticmethod
    def rsa_oaep(hash_alg, mgf, label=None):
        """CKM_RSA_PKCS_OAEP with a hash, an MGF1 variant and an optional label."""
        cdef Mechanism m = Mechanism.__new__(Mechanism)
        m.oaep.hashAlg = <CK_MECHANISM_TYPE>hash_alg
        m.oaep.mgf = <CK_ULONG>mgf
        m.oaep.source = CKZ_DATA_SPECIFIED
        if label is not None:
            m._hold(label)
            m.oaep.pSourceData = m.extra.buf
            m.oaep.ulSourceDataLen = <CK_ULONG>m.extra.len
        m.mech.mechanism = CKM_RSA_PKCS_OAEP
        m.mech.pParameter = &m.oaep
        m.mech.ulParameterLen = sizeof(CK_RSA_PKCS_OAEP_PARAMS)
        return m

    @staticmethod
    def rsa_pss(hash_alg, mgf, salt_len, mechanism=CKM_RSA_PKCS_PSS):
        """An RSA-PSS mechanism (CKM_RSA_PKCS_PSS or a SHA*_RSA_PKCS_PSS) with its parameters."""
        cdef Mechanism m = Mechanism.__new__(Mechanism)
        if salt_len < 0:
            raise InvalidRequestError("PSS salt length must not be negative")
        m.pss.hashAlg = <CK_MECHANISM_TYPE>hash_alg
        m.pss.mgf = <CK_ULONG>mgf
        m.pss.sLen = <CK_ULONG>salt_len
        m.mech.mechanism = <CK_MECHANISM_TYPE>mechanism
        m.mech.pParameter = &m.pss
        m.mech.ulParameterLen = sizeof(CK_RSA_PKCS_PSS_PARAMS)
        return m


cdef Mechanism _as_mechanism(object mechanism):
    if isinstance(mechanism, Mechanism):
        return <Mechanism>mechanism
    return Mechanism(mechanism)
