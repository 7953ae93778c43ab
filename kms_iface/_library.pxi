# Loading a module, initialising it with OS locking, and the slot/token introspection calls.

Version = namedtuple("Version", "major minor")
LibraryInfo = namedtuple(
    "LibraryInfo", "cryptoki_version manufacturer_id flags description library_version")
SlotInfo = namedtuple(
    "SlotInfo", "description manufacturer_id flags hardware_version firmware_version")
TokenInfo = namedtuple(
    "TokenInfo",
    "label manufacturer_id model serial_number flags max_session_count session_count "
    "max_rw_session_count rw_session_count max_pin_len min_pin_len total_public_memory "
    "free_public_memory total_private_memory free_private_memory hardware_version "
    "firmware_version utc_time")
MechanismInfo = namedtuple("MechanismInfo", "min_key_size max_key_size flags")
SessionInfo = namedtuple("SessionInfo", "slot_id state flags device_error")

# Upper bound on list sizes a module may report (slots, mechanisms); more is a module bug.
cdef CK_ULONG _MAX_LIST = 65536


cdef inline str _text(const CK_BYTE *field, size_t n):
    return (<bytes>(<char *>field)[:n]).decode("utf-8", "replace").rstrip(" \x00")


cdef inline object _version(CK_VERSION v):
    return Version(v.major, v.minor)


cdef int _check(CK_RV rv, str function) except -1:
    if rv != CKR_OK:
        raise pkcs11_error(rv, function)
    return 0


cdef class Library:
    """A dlopen'ed PKCS#11 module, its function table and its initialisation state.

    One instance per loaded file: ``kms_iface.pkcs11.module`` shares it between users.
    ``close()`` refuses while a call is in flight, so the module is never unloaded under a
    running thread.
    """

    cdef void *_dl
    cdef CK_FUNCTION_LIST *_fl
    cdef CK_FUNCTION_LIST_3_0 *_fl3
    cdef readonly str path
    cdef CK_VERSION _iface_version
    cdef bint _initialized
    cdef bint _owns_init
    cdef bint _needs_reinit
    cdef int _epoch
    cdef int _calls
    cdef CK_FLAGS _init_flags
    cdef object _init_reserved

    def __cinit__(self, str path):
        cdef bytes bpath = path.encode()
        cdef CK_C_GetInterface get_interface
        cdef CK_C_GetFunctionList get_list
        cdef CK_INTERFACE *iface = NULL
        cdef CK_RV rv
        cdef const char *err
        cdef const char *cpath = bpath
        self.path = path
        with nogil:
            self._dl = dlopen(cpath, RTLD_NOW | RTLD_LOCAL)
        if self._dl == NULL:
            err = dlerror()
            reason = err.decode("utf-8", "replace") if err != NULL else "unknown error"
            raise HsmError(f"cannot load PKCS#11 module {path!r}: {reason}")
        get_interface = <CK_C_GetInterface>dlsym(self._dl, "C_GetInterface")
        if get_interface != NULL:
            with nogil:
                rv = get_interface(<CK_BYTE *>"PKCS 11", NULL, &iface, 0)
            if rv == CKR_OK and iface != NULL and iface.pFunctionList != NULL:
                self._fl = <CK_FUNCTION_LIST *>iface.pFunctionList
                if self._fl.version.major >= 3:
                    self._fl3 = <CK_FUNCTION_LIST_3_0 *>iface.pFunctionList
        if self._fl == NULL:
            get_list = <CK_C_GetFunctionList>dlsym(self._dl, "C_GetFunctionList")
            if get_list == NULL:
                dlclose(self._dl)
                self._dl = NULL
                raise HsmError(f"{path!r} is not a PKCS#11 module: no C_GetFunctionList")
            with nogil:
                rv = get_list(&self._fl)
            if rv != CKR_OK or self._fl == NULL:
                dlclose(self._dl)
                self._dl = NULL
                self._fl = NULL
                raise pkcs11_error(rv if rv != CKR_OK else CKR_ARGUMENTS_BAD, "C_GetFunctionList")
        self._iface_version = self._fl.version
        self._init_flags = CKF_OS_LOCKING_OK

    def __dealloc__(self):
        if self._dl != NULL and self._calls == 0:
            if self._owns_init:
                self._fl.C_Finalize(NULL)
            dlclose(self._dl)

    def __repr__(self):
        return f"<Library {self.path!r} initialized={bool(self._initialized)}>"

    @property
    def initialized(self):
        """True between a successful ``initialize()`` and ``finalize()``."""
        return self._initialized

    @property
    def epoch(self):
        """Bumped at every re-initialisation; sessions of an older epoch are stale."""
        return self._epoch

    @property
    def interface_version(self):
        """The version of the function table in use (3.x when C_GetInterface gave one)."""
        return _version(self._iface_version)

    cdef inline int _ready(self) except -1:
        if self._fl == NULL:
            raise HsmError(f"PKCS#11 module {self.path!r} is closed")
        if self._needs_reinit:
            self._reinitialize()
        return 0

    cdef int _reinitialize(self) except -1:
        self._needs_reinit = False
        self._initialized = False
        with nogil:
            self._fl.C_Finalize(NULL)
        self._initialize(self._init_flags, self._init_reserved)
        return 0

    cdef bint _initialize(self, CK_FLAGS flags, object reserved) except -1:
        cdef CK_C_INITIALIZE_ARGS args
        cdef CK_RV rv
        memset(&args, 0, sizeof(args))
        args.flags = flags
        if reserved is not None:
            args.pReserved = <void *>PyBytes_AS_STRING(reserved)
        with nogil:
            rv = self._fl.C_Initialize(&args)
        if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED:
            self._initialized = True
            return False
        _check(rv, "C_Initialize")
        self._initialized = True
        self._owns_init = True
        self._init_flags = flags
        self._init_reserved = reserved
        return True

    def initialize(self, flags=CKF_OS_LOCKING_OK, reserved=None):
        """C_Initialize with ``flags`` (default CKF_OS_LOCKING_OK) and an optional pReserved.

        Returns False when the module was already initialised by someone else in this process.
        """
        if self._fl == NULL:
            raise HsmError(f"PKCS#11 module {self.path!r} is closed")
        if self._initialized:
            return False
        return self._initialize(<CK_FLAGS>flags, None if reserved is None else bytes(reserved))

    def finalize(self):
        """C_Finalize if this object initialised the module; every session becomes stale."""
        cdef CK_RV rv
        if self._calls:
            raise HsmError(f"PKCS#11 module {self.path!r} has {self._calls} calls in flight")
        if self._fl == NULL or not self._initialized:
            return
        self._epoch += 1
        self._initialized = False
        if self._owns_init:
            self._owns_init = False
            with nogil:
                rv = self._fl.C_Finalize(NULL)
            _check(rv, "C_Finalize")

    def close(self):
        """Finalise and unload the module (idempotent)."""
        if self._dl == NULL:
            return
        self.finalize()
        self._fl = NULL
        self._fl3 = NULL
        dlclose(self._dl)
        self._dl = NULL

    def after_fork(self):
        """Called in a forked child: parent sessions become stale, the next call re-initialises."""
        self._epoch += 1
        self._calls = 0
        if self._initialized and self._owns_init:
            self._needs_reinit = True

    def get_info(self):
        cdef CK_INFO info
        cdef CK_RV rv
        self._ready()
        with nogil:
            rv = self._fl.C_GetInfo(&info)
        _check(rv, "C_GetInfo")
        return LibraryInfo(
            _version(info.cryptokiVersion), _text(info.manufacturerID, 32), info.flags,
            _text(info.libraryDescription, 32), _version(info.libraryVersion))

    cdef list _ulong_list(self, int which, CK_SLOT_ID slot, CK_BBOOL present):
        """C_GetSlotList / C_GetMechanismList with the count call and one retry on growth."""
        cdef CK_ULONG count = 0, attempt
        cdef CK_ULONG *items = NULL
        cdef CK_RV rv
        cdef str function = "C_GetSlotList" if which == 0 else "C_GetMechanismList"
        self._ready()
        for attempt in range(3):
            with nogil:
                if which == 0:
                    rv = self._fl.C_GetSlotList(present, items, &count)
                else:
                    rv = self._fl.C_GetMechanismList(slot, items, &count)
            if rv == CKR_BUFFER_TOO_SMALL or (rv == CKR_OK and items == NULL):
                if count > _MAX_LIST:
                    free(items)
                    raise HsmError(f"{function} reported an implausible count {count}")
                free(items)
                items = <CK_ULONG *>malloc(sizeof(CK_ULONG) * (count + 1))
                if items == NULL:
                    raise MemoryError()
                continue
            break
        try:
            _check(rv, function)
            return [items[i] for i in range(count)]
        finally:
            free(items)

    def get_slot_list(self, token_present=True):
        return self._ulong_list(0, 0, 1 if token_present else 0)

    def get_slot_info(self, slot_id):
        cdef CK_SLOT_INFO info
        cdef CK_SLOT_ID slot = slot_id
        cdef CK_RV rv
        self._ready()
        with nogil:
            rv = self._fl.C_GetSlotInfo(slot, &info)
        _check(rv, "C_GetSlotInfo")
        return SlotInfo(
            _text(info.slotDescription, 64), _text(info.manufacturerID, 32), info.flags,
            _version(info.hardwareVersion), _version(info.firmwareVersion))

    def get_token_info(self, slot_id):
        cdef CK_TOKEN_INFO t
        cdef CK_SLOT_ID slot = slot_id
        cdef CK_RV rv
        self._ready()
        with nogil:
            rv = self._fl.C_GetTokenInfo(slot, &t)
        _check(rv, "C_GetTokenInfo")
        return TokenInfo(
            _text(t.label, 32), _text(t.manufacturerID, 32), _text(t.model, 16),
            _text(t.serialNumber, 16), t.flags, t.ulMaxSessionCount, t.ulSessionCount,
            t.ulMaxRwSessionCount, t.ulRwSessionCount, t.ulMaxPinLen, t.ulMinPinLen,
            t.ulTotalPublicMemory, t.ulFreePublicMemory, t.ulTotalPrivateMemory,
            t.ulFreePrivateMemory, _version(t.hardwareVersion), _version(t.firmwareVersion),
            _text(t.utcTime, 16))

    def get_mechanism_list(self, slot_id):
        return self._ulong_list(1, slot_id, 0)

    def get_mechanism_info(self, slot_id, mechanism):
        cdef CK_MECHANISM_INFO info
        cdef CK_SLOT_ID slot = slot_id
        cdef CK_MECHANISM_TYPE mech = mechanism
        cdef CK_RV rv
        self._ready()
        memset(&info, 0, sizeof(info))  # some modules add flags to what is there (SoftHSM2)
        with nogil:
            rv = self._fl.C_GetMechanismInfo(slot, mech, &info)
        _check(rv, "C_GetMechanismInfo")
        return MechanismInfo(info.ulMinKeySize, info.ulMaxKeySize, info.flags)

    def open_session(self, slot_id, flags=CKF_RW_SESSION | CKF_SERIAL_SESSION):
        """C_OpenSession; the session is a ``Session`` bound to this module's epoch."""
        cdef CK_SESSION_HANDLE h
        cdef CK_SLOT_ID slot = slot_id
        cdef CK_FLAGS f = flags | CKF_SERIAL_SESSION
        cdef CK_RV rv
        self._ready()
        with nogil:
            rv = self._fl.C_OpenSession(slot, f, NULL, NULL, &h)
        _check(rv, "C_OpenSession")
        return Session._new(self, h, slot)

    def close_all_sessions(self, slot_id):
        """C_CloseAllSessions: every session of the slot closes and the token logs out."""
        cdef CK_SLOT_ID slot = slot_id
        cdef CK_RV rv
        self._ready()
        with nogil:
            rv = self._fl.C_CloseAllSessions(slot)
        _check(rv, "C_CloseAllSessions")
