"""The kms_iface error tree, and the one place where a PKCS#11 CK_RV becomes an exception.

Every interface method raises only ``InterfaceError`` subclasses for expected failures. Each class
has a ``prefix``; ``str(e)`` is ``prefix + message`` and ``e.message`` is the bare message, so the
text matches the Rust ``InterfaceError`` variants of Cosmian:

    class                 prefix
    InterfaceError        (none)
    InvalidRequestError   "Invalid Request: "
    NotSupportedError     "Not Supported: "
    UnauthorizedError     "Unauthorized: "
    HsmError              "HSM Error: "
    DbError               "Database Error: "

Which class for which failure:

    failure                                                    class
    bad argument (key length, IV/tag length, uid form,         InvalidRequestError
      unknown slot, wrong key type for the operation)
    key id not found for an operation that needs it            InvalidRequestError
      (encrypt, decrypt, sign, delete)                           ("Object not found")
    key id not found for a lookup (export, get_key_type,       returns None
      get_key_metadata, retrieve)
    id already exists on create                                HsmError (token) / DbError (store)
    authentication failure on decrypt (bad GCM tag, wrong IV,  DecryptionError(HsmError), one
      bad CBC padding)                                           generic message, no CK_RV
    malformed KMIP / JSON / MessagePack input                  MalformedKmipError
                                                                 (InvalidRequestError) with path
    operation the backend cannot do                            NotSupportedError
    caller not allowed                                         UnauthorizedError
    token or device failure                                    HsmError subclass with CK_RV
                                                                 (Pkcs11Error and its named classes)
    storage failure                                            DbError
    database unreachable, connection lost (nothing applied)    DbConnectionError (DbError)
    connection lost after a write's COMMIT was sent            DbOutcomeUnknownError (DbError)

A failing C call raises ``Pkcs11Error`` (or the named subclass for its code) built by
``pkcs11_error(rv, function)``; it carries ``rv``, ``rv_name`` and ``function`` and reads like
``HSM Error: C_Decrypt failed: CKR_ENCRYPTED_DATA_INVALID (0x40)``. A decryption that fails its
authentication or padding check raises ``DecryptionError`` instead, with the same text whatever
failed and without the CK_RV, so that no caller can build a padding or tag oracle from it.

Messages are only ever what the caller passes (or a code name and a function name): never put a
PIN, key bytes or plaintext into one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

__all__ = [
    "CKR_NAMES",
    "DECRYPTION_FAILED_MESSAGE",
    "DECRYPTION_FAILURE_CODES",
    "DECRYPT_FUNCTIONS",
    "LOGIN_LOST_CODES",
    "PKCS11_ERROR_CLASSES",
    "SESSION_LOST_CODES",
    "STALE_HANDLE_CODES",
    "ArgumentsBadError",
    "AttributeReadOnlyError",
    "AttributeSensitiveError",
    "AttributeTypeInvalidError",
    "AttributeValueInvalidError",
    "BufferTooSmallError",
    "CantLockError",
    "CryptokiAlreadyInitializedError",
    "CryptokiNotInitializedError",
    "DataInvalidError",
    "DataLenRangeError",
    "DbConnectionError",
    "DbError",
    "DbOutcomeUnknownError",
    "DecryptionError",
    "DeviceError",
    "DeviceMemoryError",
    "DeviceRemovedError",
    "EncryptedDataInvalidError",
    "EncryptedDataLenRangeError",
    "FunctionFailedError",
    "FunctionNotSupportedError",
    "GeneralError",
    "HostMemoryError",
    "HsmError",
    "HsmTimeoutError",
    "InterfaceError",
    "InvalidRequestError",
    "KeyFunctionNotPermittedError",
    "KeyHandleInvalidError",
    "KeySizeRangeError",
    "KeyTypeInconsistentError",
    "KeyUnextractableError",
    "MalformedKmipError",
    "MechanismInvalidError",
    "MechanismParamInvalidError",
    "NotSupportedError",
    "ObjectHandleInvalidError",
    "OperationActiveError",
    "OperationNotInitializedError",
    "PinExpiredError",
    "PinIncorrectError",
    "PinInvalidError",
    "PinLenRangeError",
    "PinLockedError",
    "Pkcs11Error",
    "RandomNoRngError",
    "RandomSeedNotSupportedError",
    "SessionClosedError",
    "SessionCountError",
    "SessionHandleInvalidError",
    "SessionPoolTimeoutError",
    "SessionReadOnlyError",
    "SignatureInvalidError",
    "SignatureLenRangeError",
    "SlotIdInvalidError",
    "TemplateIncompleteError",
    "TemplateInconsistentError",
    "TokenNotPresentError",
    "TokenNotRecognizedError",
    "TokenWriteProtectedError",
    "UnauthorizedError",
    "UserAlreadyLoggedInError",
    "UserNotLoggedInError",
    "UserPinNotInitializedError",
    "UserTypeInvalidError",
    "pkcs11_error",
    "rv_name",
]
# The CKR_* constants below are public too; they are appended to __all__ after the table.

# ---------------------------------------------------------------------------------------------
# CK_RV values: PKCS#11 2.40 and 3.0 (3.1/3.2 additions marked). Checked against the OASIS
# headers. Note: some headers derived from a 2.40 draft (p11-kit, GnuTLS) give 0x1C0-0x1C4 for
# CKR_EXCEEDED_MAX_ITERATIONS..CKR_PUBLIC_KEY_INVALID; the published standard uses 0x1B5-0x1B9.
# ---------------------------------------------------------------------------------------------
CKR_OK: Final = 0x00000000
CKR_CANCEL: Final = 0x00000001
CKR_HOST_MEMORY: Final = 0x00000002
CKR_SLOT_ID_INVALID: Final = 0x00000003
CKR_GENERAL_ERROR: Final = 0x00000005
CKR_FUNCTION_FAILED: Final = 0x00000006
CKR_ARGUMENTS_BAD: Final = 0x00000007
CKR_NO_EVENT: Final = 0x00000008
CKR_NEED_TO_CREATE_THREADS: Final = 0x00000009
CKR_CANT_LOCK: Final = 0x0000000A
CKR_ATTRIBUTE_READ_ONLY: Final = 0x00000010
CKR_ATTRIBUTE_SENSITIVE: Final = 0x00000011
CKR_ATTRIBUTE_TYPE_INVALID: Final = 0x00000012
CKR_ATTRIBUTE_VALUE_INVALID: Final = 0x00000013
CKR_ACTION_PROHIBITED: Final = 0x0000001B
CKR_DATA_INVALID: Final = 0x00000020
CKR_DATA_LEN_RANGE: Final = 0x00000021
CKR_DEVICE_ERROR: Final = 0x00000030
CKR_DEVICE_MEMORY: Final = 0x00000031
CKR_DEVICE_REMOVED: Final = 0x00000032
CKR_ENCRYPTED_DATA_INVALID: Final = 0x00000040
CKR_ENCRYPTED_DATA_LEN_RANGE: Final = 0x00000041
CKR_AEAD_DECRYPT_FAILED: Final = 0x00000042
CKR_FUNCTION_CANCELED: Final = 0x00000050
CKR_FUNCTION_NOT_PARALLEL: Final = 0x00000051
CKR_FUNCTION_NOT_SUPPORTED: Final = 0x00000054
CKR_KEY_HANDLE_INVALID: Final = 0x00000060
CKR_KEY_SIZE_RANGE: Final = 0x00000062
CKR_KEY_TYPE_INCONSISTENT: Final = 0x00000063
CKR_KEY_NOT_NEEDED: Final = 0x00000064
CKR_KEY_CHANGED: Final = 0x00000065
CKR_KEY_NEEDED: Final = 0x00000066
CKR_KEY_INDIGESTIBLE: Final = 0x00000067
CKR_KEY_FUNCTION_NOT_PERMITTED: Final = 0x00000068
CKR_KEY_NOT_WRAPPABLE: Final = 0x00000069
CKR_KEY_UNEXTRACTABLE: Final = 0x0000006A
CKR_MECHANISM_INVALID: Final = 0x00000070
CKR_MECHANISM_PARAM_INVALID: Final = 0x00000071
CKR_OBJECT_HANDLE_INVALID: Final = 0x00000082
CKR_OPERATION_ACTIVE: Final = 0x00000090
CKR_OPERATION_NOT_INITIALIZED: Final = 0x00000091
CKR_PIN_INCORRECT: Final = 0x000000A0
CKR_PIN_INVALID: Final = 0x000000A1
CKR_PIN_LEN_RANGE: Final = 0x000000A2
CKR_PIN_EXPIRED: Final = 0x000000A3
CKR_PIN_LOCKED: Final = 0x000000A4
CKR_SESSION_CLOSED: Final = 0x000000B0
CKR_SESSION_COUNT: Final = 0x000000B1
CKR_SESSION_HANDLE_INVALID: Final = 0x000000B3
CKR_SESSION_PARALLEL_NOT_SUPPORTED: Final = 0x000000B4
CKR_SESSION_READ_ONLY: Final = 0x000000B5
CKR_SESSION_EXISTS: Final = 0x000000B6
CKR_SESSION_READ_ONLY_EXISTS: Final = 0x000000B7
CKR_SESSION_READ_WRITE_SO_EXISTS: Final = 0x000000B8
CKR_SIGNATURE_INVALID: Final = 0x000000C0
CKR_SIGNATURE_LEN_RANGE: Final = 0x000000C1
CKR_TEMPLATE_INCOMPLETE: Final = 0x000000D0
CKR_TEMPLATE_INCONSISTENT: Final = 0x000000D1
CKR_TOKEN_NOT_PRESENT: Final = 0x000000E0
CKR_TOKEN_NOT_RECOGNIZED: Final = 0x000000E1
CKR_TOKEN_WRITE_PROTECTED: Final = 0x000000E2
CKR_UNWRAPPING_KEY_HANDLE_INVALID: Final = 0x000000F0
CKR_UNWRAPPING_KEY_SIZE_RANGE: Final = 0x000000F1
CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: Final = 0x000000F2
CKR_USER_ALREADY_LOGGED_IN: Final = 0x00000100
CKR_USER_NOT_LOGGED_IN: Final = 0x00000101
CKR_USER_PIN_NOT_INITIALIZED: Final = 0x00000102
CKR_USER_TYPE_INVALID: Final = 0x00000103
CKR_USER_ANOTHER_ALREADY_LOGGED_IN: Final = 0x00000104
CKR_USER_TOO_MANY_TYPES: Final = 0x00000105
CKR_WRAPPED_KEY_INVALID: Final = 0x00000110
CKR_WRAPPED_KEY_LEN_RANGE: Final = 0x00000112
CKR_WRAPPING_KEY_HANDLE_INVALID: Final = 0x00000113
CKR_WRAPPING_KEY_SIZE_RANGE: Final = 0x00000114
CKR_WRAPPING_KEY_TYPE_INCONSISTENT: Final = 0x00000115
CKR_RANDOM_SEED_NOT_SUPPORTED: Final = 0x00000120
CKR_RANDOM_NO_RNG: Final = 0x00000121
CKR_DOMAIN_PARAMS_INVALID: Final = 0x00000130
CKR_CURVE_NOT_SUPPORTED: Final = 0x00000140
CKR_BUFFER_TOO_SMALL: Final = 0x00000150
CKR_SAVED_STATE_INVALID: Final = 0x00000160
CKR_INFORMATION_SENSITIVE: Final = 0x00000170
CKR_STATE_UNSAVEABLE: Final = 0x00000180
CKR_CRYPTOKI_NOT_INITIALIZED: Final = 0x00000190
CKR_CRYPTOKI_ALREADY_INITIALIZED: Final = 0x00000191
CKR_MUTEX_BAD: Final = 0x000001A0
CKR_MUTEX_NOT_LOCKED: Final = 0x000001A1
CKR_NEW_PIN_MODE: Final = 0x000001B0
CKR_NEXT_OTP: Final = 0x000001B1
CKR_EXCEEDED_MAX_ITERATIONS: Final = 0x000001B5
CKR_FIPS_SELF_TEST_FAILED: Final = 0x000001B6
CKR_LIBRARY_LOAD_FAILED: Final = 0x000001B7
CKR_PIN_TOO_WEAK: Final = 0x000001B8
CKR_PUBLIC_KEY_INVALID: Final = 0x000001B9
CKR_FUNCTION_REJECTED: Final = 0x00000200
CKR_TOKEN_RESOURCE_EXCEEDED: Final = 0x00000201
CKR_OPERATION_CANCEL_FAILED: Final = 0x00000202
CKR_KEY_EXHAUSTED: Final = 0x00000203  # 3.1
CKR_PENDING: Final = 0x00000204  # 3.2
CKR_SESSION_ASYNC_NOT_SUPPORTED: Final = 0x00000205  # 3.2
CKR_SEED_RANDOM_REQUIRED: Final = 0x00000206  # 3.2
CKR_OPERATION_NOT_VALIDATED: Final = 0x00000207  # 3.2
CKR_TOKEN_NOT_INITIALIZED: Final = 0x00000208  # 3.2
CKR_PARAMETER_SET_NOT_SUPPORTED: Final = 0x00000209  # 3.2
CKR_VENDOR_DEFINED: Final = 0x80000000


def _collect_ckr_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for name, value in globals().items():
        if name.startswith("CKR_") and type(value) is int:
            names.setdefault(value, name)
    return names


CKR_NAMES: Final[dict[int, str]] = _collect_ckr_names()
"""CK_RV value -> its CKR_ name, for every return code defined above."""

__all__ += sorted(CKR_NAMES.values())


def rv_name(rv: int) -> str:
    """Name a CK_RV: its CKR_ name, else ``CKR_VENDOR_DEFINED+0x..`` or ``CKR_UNKNOWN``."""
    name = CKR_NAMES.get(rv)
    if name is not None:
        return name
    if rv > CKR_VENDOR_DEFINED:
        return f"CKR_VENDOR_DEFINED+0x{rv - CKR_VENDOR_DEFINED:x}"
    return "CKR_UNKNOWN"


# ---------------------------------------------------------------------------------------------
# The error tree.
# ---------------------------------------------------------------------------------------------


def _name_of(rv: int) -> str:
    # HsmError.__init__ takes a parameter called rv_name that shadows the module function.
    return rv_name(rv)


class InterfaceError(Exception):
    """Root of every expected failure of a kms_iface interface (Cosmian's ``Default`` variant)."""

    prefix: ClassVar[str] = ""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message: str = message

    def __str__(self) -> str:
        return f"{self.prefix}{self.message}"


class InvalidRequestError(InterfaceError):
    """The caller's request is wrong: bad argument, uid form, slot, key type, or unknown key."""

    prefix: ClassVar[str] = "Invalid Request: "


class MalformedKmipError(InvalidRequestError):
    """KMIP input (Cosmian JSON or MessagePack) that does not decode; ``path`` names the field.

    ``path`` is a JSON-path-like location such as ``$.SymmetricKey.KeyBlock.CryptographicLength``
    (``$`` when the input is not even well formed). The message never quotes key material.
    """

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path: str = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.path))


class NotSupportedError(InterfaceError):
    """The backend cannot perform this operation at all."""

    prefix: ClassVar[str] = "Not Supported: "


class UnauthorizedError(InterfaceError):
    """The caller is not allowed to perform this operation."""

    prefix: ClassVar[str] = "Unauthorized: "


class DbError(InterfaceError):
    """A store (database) failure, including a duplicate uid on create."""

    prefix: ClassVar[str] = "Database Error: "


class DbConnectionError(DbError):
    """The database server could not be reached, or the connection was lost, within the store's
    timeouts. The call was not applied: it may be tried again."""


class DbOutcomeUnknownError(DbError):
    """The connection was lost after a write's COMMIT was sent: the write may or may not have been
    applied. Read the state back before trying again."""


class HsmError(InterfaceError):
    """A token or device failure; carries the CK_RV, its name and the C function when known."""

    prefix: ClassVar[str] = "HSM Error: "

    def __init__(
        self,
        message: str = "",
        *,
        rv: int | None = None,
        rv_name: str | None = None,
        function: str | None = None,
    ) -> None:
        super().__init__(message)
        self.rv: int | None = rv
        self.rv_name: str | None = rv_name if rv_name is not None or rv is None else _name_of(rv)
        self.function: str | None = function


class Pkcs11Error(HsmError):
    """A C call failed with a CK_RV; the named subclasses below exist for the common codes."""

    code: ClassVar[int | None] = None
    """The CK_RV a named subclass stands for (set from PKCS11_ERROR_CLASSES); None here."""

    def __init__(self, rv: int | None = None, function: str | None = None) -> None:
        if rv is None:
            rv = type(self).code
            if rv is None:
                raise TypeError("Pkcs11Error needs the CK_RV")
        name = rv_name(rv)
        super().__init__(
            f"{function or 'PKCS#11 call'} failed: {name} (0x{rv:x})",
            rv=rv,
            rv_name=name,
            function=function,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.rv, self.function), self.__dict__)


class PinIncorrectError(Pkcs11Error):
    """CKR_PIN_INCORRECT: the PIN given to C_Login is wrong."""


class PinLockedError(Pkcs11Error):
    """CKR_PIN_LOCKED: too many wrong PINs; the token refuses logins."""


class PinInvalidError(Pkcs11Error):
    """CKR_PIN_INVALID: the PIN contains characters the token does not accept."""


class PinLenRangeError(Pkcs11Error):
    """CKR_PIN_LEN_RANGE: the PIN is too short or too long for the token."""


class PinExpiredError(Pkcs11Error):
    """CKR_PIN_EXPIRED: the PIN must be changed before use."""


class SessionHandleInvalidError(Pkcs11Error):
    """CKR_SESSION_HANDLE_INVALID: the session is gone; the pool discards it and retries once."""


class SessionClosedError(Pkcs11Error):
    """CKR_SESSION_CLOSED: the session was closed during the call; the pool retries once."""


class SessionCountError(Pkcs11Error):
    """CKR_SESSION_COUNT: the token cannot open more sessions."""


class SessionReadOnlyError(Pkcs11Error):
    """CKR_SESSION_READ_ONLY: the operation needs a read-write session."""


class KeyHandleInvalidError(Pkcs11Error):
    """CKR_KEY_HANDLE_INVALID: a stale key handle; the handle cache re-looks it up once."""


class ObjectHandleInvalidError(Pkcs11Error):
    """CKR_OBJECT_HANDLE_INVALID: a stale object handle; the handle cache re-looks it up once."""


class EncryptedDataInvalidError(Pkcs11Error):
    """CKR_ENCRYPTED_DATA_INVALID outside a decryption (a decryption raises DecryptionError)."""


class EncryptedDataLenRangeError(Pkcs11Error):
    """CKR_ENCRYPTED_DATA_LEN_RANGE outside a decryption (a decryption raises DecryptionError)."""


class DataLenRangeError(Pkcs11Error):
    """CKR_DATA_LEN_RANGE: the input length does not suit the mechanism or key."""


class DataInvalidError(Pkcs11Error):
    """CKR_DATA_INVALID: the input is not valid for the mechanism."""


class DeviceError(Pkcs11Error):
    """CKR_DEVICE_ERROR: the token or device failed."""


class DeviceRemovedError(Pkcs11Error):
    """CKR_DEVICE_REMOVED: the token went away during the call; its sessions are lost."""


class DeviceMemoryError(Pkcs11Error):
    """CKR_DEVICE_MEMORY: the token is out of memory."""


class TokenNotPresentError(Pkcs11Error):
    """CKR_TOKEN_NOT_PRESENT: no token in the slot; its sessions are lost."""


class TokenNotRecognizedError(Pkcs11Error):
    """CKR_TOKEN_NOT_RECOGNIZED: the module does not recognise the token in the slot."""


class TokenWriteProtectedError(Pkcs11Error):
    """CKR_TOKEN_WRITE_PROTECTED: the token refuses to create or modify objects."""


class SlotIdInvalidError(Pkcs11Error):
    """CKR_SLOT_ID_INVALID: the module has no such slot."""


class UserNotLoggedInError(Pkcs11Error):
    """CKR_USER_NOT_LOGGED_IN: the login is gone; the pool logs in again once."""


class UserAlreadyLoggedInError(Pkcs11Error):
    """CKR_USER_ALREADY_LOGGED_IN: harmless for the per-token login; the pool tolerates it."""


class UserPinNotInitializedError(Pkcs11Error):
    """CKR_USER_PIN_NOT_INITIALIZED: the token has no user PIN yet."""


class UserTypeInvalidError(Pkcs11Error):
    """CKR_USER_TYPE_INVALID: the user type given to C_Login is not CKU_SO/USER/CONTEXT_SPECIFIC."""


class MechanismInvalidError(Pkcs11Error):
    """CKR_MECHANISM_INVALID: the token does not support the mechanism for this call."""


class MechanismParamInvalidError(Pkcs11Error):
    """CKR_MECHANISM_PARAM_INVALID: the mechanism parameters are refused (e.g. an OAEP hash)."""


class KeyTypeInconsistentError(Pkcs11Error):
    """CKR_KEY_TYPE_INCONSISTENT: the key type does not suit the mechanism."""


class KeyFunctionNotPermittedError(Pkcs11Error):
    """CKR_KEY_FUNCTION_NOT_PERMITTED: the key's attributes forbid this use."""


class KeySizeRangeError(Pkcs11Error):
    """CKR_KEY_SIZE_RANGE: the key size is outside what the mechanism supports."""


class KeyUnextractableError(Pkcs11Error):
    """CKR_KEY_UNEXTRACTABLE: the key cannot be wrapped (CKA_EXTRACTABLE is false)."""


class AttributeSensitiveError(Pkcs11Error):
    """CKR_ATTRIBUTE_SENSITIVE: the attribute (e.g. a sensitive key's value) cannot be read."""


class AttributeTypeInvalidError(Pkcs11Error):
    """CKR_ATTRIBUTE_TYPE_INVALID: the object has no such attribute."""


class AttributeValueInvalidError(Pkcs11Error):
    """CKR_ATTRIBUTE_VALUE_INVALID: an attribute value in the template is refused."""


class AttributeReadOnlyError(Pkcs11Error):
    """CKR_ATTRIBUTE_READ_ONLY: the attribute cannot be set or changed."""


class TemplateIncompleteError(Pkcs11Error):
    """CKR_TEMPLATE_INCOMPLETE: the template lacks a required attribute."""


class TemplateInconsistentError(Pkcs11Error):
    """CKR_TEMPLATE_INCONSISTENT: the template holds conflicting attributes."""


class OperationActiveError(Pkcs11Error):
    """CKR_OPERATION_ACTIVE: the session still has an operation running."""


class OperationNotInitializedError(Pkcs11Error):
    """CKR_OPERATION_NOT_INITIALIZED: no operation of that kind is active on the session."""


class SignatureInvalidError(Pkcs11Error):
    """CKR_SIGNATURE_INVALID: the signature does not verify."""


class SignatureLenRangeError(Pkcs11Error):
    """CKR_SIGNATURE_LEN_RANGE: the signature has the wrong length, so it cannot verify."""


class BufferTooSmallError(Pkcs11Error):
    """CKR_BUFFER_TOO_SMALL: the output buffer was too small (the core resizes and retries)."""


class ArgumentsBadError(Pkcs11Error):
    """CKR_ARGUMENTS_BAD: the module rejected the call's arguments."""


class FunctionFailedError(Pkcs11Error):
    """CKR_FUNCTION_FAILED: the function could not complete."""


class GeneralError(Pkcs11Error):
    """CKR_GENERAL_ERROR: an unrecoverable token or module error."""


class HostMemoryError(Pkcs11Error):
    """CKR_HOST_MEMORY: the module ran out of host memory."""


class CryptokiNotInitializedError(Pkcs11Error):
    """CKR_CRYPTOKI_NOT_INITIALIZED: C_Initialize has not been called (or not in this process)."""


class CryptokiAlreadyInitializedError(Pkcs11Error):
    """CKR_CRYPTOKI_ALREADY_INITIALIZED: tolerated by the loader when the module is shared."""


class FunctionNotSupportedError(Pkcs11Error):
    """CKR_FUNCTION_NOT_SUPPORTED: the module does not implement the function."""


class RandomNoRngError(Pkcs11Error):
    """CKR_RANDOM_NO_RNG: the token has no random number generator."""


class RandomSeedNotSupportedError(Pkcs11Error):
    """CKR_RANDOM_SEED_NOT_SUPPORTED: the token's RNG cannot be seeded."""


class CantLockError(Pkcs11Error):
    """CKR_CANT_LOCK: the module cannot use OS locking (needs the C_Initialize override)."""


PKCS11_ERROR_CLASSES: Final[dict[int, type[Pkcs11Error]]] = {
    CKR_HOST_MEMORY: HostMemoryError,
    CKR_SLOT_ID_INVALID: SlotIdInvalidError,
    CKR_GENERAL_ERROR: GeneralError,
    CKR_FUNCTION_FAILED: FunctionFailedError,
    CKR_ARGUMENTS_BAD: ArgumentsBadError,
    CKR_CANT_LOCK: CantLockError,
    CKR_ATTRIBUTE_READ_ONLY: AttributeReadOnlyError,
    CKR_ATTRIBUTE_SENSITIVE: AttributeSensitiveError,
    CKR_ATTRIBUTE_TYPE_INVALID: AttributeTypeInvalidError,
    CKR_ATTRIBUTE_VALUE_INVALID: AttributeValueInvalidError,
    CKR_DATA_INVALID: DataInvalidError,
    CKR_DATA_LEN_RANGE: DataLenRangeError,
    CKR_DEVICE_ERROR: DeviceError,
    CKR_DEVICE_MEMORY: DeviceMemoryError,
    CKR_DEVICE_REMOVED: DeviceRemovedError,
    CKR_ENCRYPTED_DATA_INVALID: EncryptedDataInvalidError,
    CKR_ENCRYPTED_DATA_LEN_RANGE: EncryptedDataLenRangeError,
    CKR_FUNCTION_NOT_SUPPORTED: FunctionNotSupportedError,
    CKR_KEY_HANDLE_INVALID: KeyHandleInvalidError,
    CKR_KEY_SIZE_RANGE: KeySizeRangeError,
    CKR_KEY_TYPE_INCONSISTENT: KeyTypeInconsistentError,
    CKR_KEY_FUNCTION_NOT_PERMITTED: KeyFunctionNotPermittedError,
    CKR_KEY_UNEXTRACTABLE: KeyUnextractableError,
    CKR_MECHANISM_INVALID: MechanismInvalidError,
    CKR_MECHANISM_PARAM_INVALID: MechanismParamInvalidError,
    CKR_OBJECT_HANDLE_INVALID: ObjectHandleInvalidError,
    CKR_OPERATION_ACTIVE: OperationActiveError,
    CKR_OPERATION_NOT_INITIALIZED: OperationNotInitializedError,
    CKR_PIN_INCORRECT: PinIncorrectError,
    CKR_PIN_INVALID: PinInvalidError,
    CKR_PIN_LEN_RANGE: PinLenRangeError,
    CKR_PIN_EXPIRED: PinExpiredError,
    CKR_PIN_LOCKED: PinLockedError,
    CKR_SESSION_CLOSED: SessionClosedError,
    CKR_SESSION_COUNT: SessionCountError,
    CKR_SESSION_HANDLE_INVALID: SessionHandleInvalidError,
    CKR_SESSION_READ_ONLY: SessionReadOnlyError,
    CKR_SIGNATURE_INVALID: SignatureInvalidError,
    CKR_SIGNATURE_LEN_RANGE: SignatureLenRangeError,
    CKR_TEMPLATE_INCOMPLETE: TemplateIncompleteError,
    CKR_TEMPLATE_INCONSISTENT: TemplateInconsistentError,
    CKR_TOKEN_NOT_PRESENT: TokenNotPresentError,
    CKR_TOKEN_NOT_RECOGNIZED: TokenNotRecognizedError,
    CKR_TOKEN_WRITE_PROTECTED: TokenWriteProtectedError,
    CKR_USER_ALREADY_LOGGED_IN: UserAlreadyLoggedInError,
    CKR_USER_NOT_LOGGED_IN: UserNotLoggedInError,
    CKR_USER_PIN_NOT_INITIALIZED: UserPinNotInitializedError,
    CKR_USER_TYPE_INVALID: UserTypeInvalidError,
    CKR_RANDOM_SEED_NOT_SUPPORTED: RandomSeedNotSupportedError,
    CKR_RANDOM_NO_RNG: RandomNoRngError,
    CKR_BUFFER_TOO_SMALL: BufferTooSmallError,
    CKR_CRYPTOKI_NOT_INITIALIZED: CryptokiNotInitializedError,
    CKR_CRYPTOKI_ALREADY_INITIALIZED: CryptokiAlreadyInitializedError,
}
"""CK_RV -> named Pkcs11Error subclass: the only code-to-class table."""

for _code, _cls in PKCS11_ERROR_CLASSES.items():
    _cls.code = _code
del _code, _cls


DECRYPTION_FAILED_MESSAGE: Final = (
    "decryption failed: the ciphertext, IV, tag, padding or key is wrong"
)
"""The one text of every DecryptionError, whatever check failed."""


class DecryptionError(HsmError):
    """A decryption failed its authentication or padding check.

    Always the same message and never the CK_RV (``rv`` and ``rv_name`` stay None), so that no
    caller can tell a bad tag from bad padding or a wrong key: no padding or tag oracle.
    """

    def __init__(self, *, function: str | None = None) -> None:
        super().__init__(DECRYPTION_FAILED_MESSAGE, function=function)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (), self.__dict__)


class SessionPoolTimeoutError(HsmError):
    """The session pool could not provide a session within the acquisition timeout."""


class HsmTimeoutError(HsmError):
    """An HSM call did not finish within the façade's ``call_timeout``.

    ``started`` False: the call was still queued and was dropped, nothing was done. ``started``
    True: the call is still running in the HSM and may yet complete (a key may be created, a
    key deleted); its result is discarded, so check the HSM's state before trying again.
    """

    def __init__(self, message: str = "", *, started: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.started = started


# ---------------------------------------------------------------------------------------------
# Classification of codes (decryption oracle suppression, session-pool recovery).
# ---------------------------------------------------------------------------------------------

DECRYPT_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        "C_Decrypt",
        "C_DecryptUpdate",
        "C_DecryptFinal",
        "C_DecryptMessage",
        "C_DecryptMessageNext",
        "C_UnwrapKey",
    }
)
"""C functions whose failures on DECRYPTION_FAILURE_CODES become one generic DecryptionError."""

DECRYPTION_FAILURE_CODES: Final[frozenset[int]] = frozenset(
    {
        CKR_ENCRYPTED_DATA_INVALID,
        CKR_ENCRYPTED_DATA_LEN_RANGE,
        CKR_AEAD_DECRYPT_FAILED,
        # SoftHSM2 answers a tampered GCM tag with CKR_GENERAL_ERROR.
        CKR_GENERAL_ERROR,
        # What C_UnwrapKey returns for a tampered or mis-padded wrapped key.
        CKR_WRAPPED_KEY_INVALID,
        CKR_WRAPPED_KEY_LEN_RANGE,
    }
)
"""Codes that, from a DECRYPT_FUNCTIONS call, mean "authentication or padding failed"."""

SESSION_LOST_CODES: Final[frozenset[int]] = frozenset(
    {
        CKR_SESSION_HANDLE_INVALID,
        CKR_SESSION_CLOSED,
        CKR_DEVICE_REMOVED,
        CKR_TOKEN_NOT_PRESENT,
    }
)
"""The session is unusable: discard it and retry once on a fresh one."""

LOGIN_LOST_CODES: Final[frozenset[int]] = frozenset({CKR_USER_NOT_LOGGED_IN})
"""The token's login is gone: log in again once (and clear the slot's handle cache)."""

STALE_HANDLE_CODES: Final[frozenset[int]] = frozenset(
    {CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID}
)
"""A cached object handle is stale: evict it and look the object up again once."""


def pkcs11_error(rv: int, function: str) -> HsmError:
    """Turn the CK_RV of a failing C call into its exception: the only place this is done.

    A decryption-style failure of a decrypting function gives the generic ``DecryptionError``;
    otherwise the named ``Pkcs11Error`` subclass for the code, else ``Pkcs11Error`` itself.
    """
    if rv == CKR_OK:
        raise ValueError(f"{function} returned CKR_OK, which is not an error")
    if function in DECRYPT_FUNCTIONS and rv in DECRYPTION_FAILURE_CODES:
        return DecryptionError(function=function)
    return PKCS11_ERROR_CLASSES.get(rv, Pkcs11Error)(rv, function)
