"""The error tree, the CK_RV -> exception mapping and the PKCS#11 constants (no token needed)."""

from __future__ import annotations

import ctypes
import pickle
import re
from typing import Any, cast

import pytest

from kms_iface import errors
from kms_iface.errors import (
    CKR_AEAD_DECRYPT_FAILED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_GENERAL_ERROR,
    CKR_NAMES,
    CKR_OK,
    DECRYPTION_FAILED_MESSAGE,
    LOGIN_LOST_CODES,
    PKCS11_ERROR_CLASSES,
    SESSION_LOST_CODES,
    STALE_HANDLE_CODES,
    AttributeSensitiveError,
    BufferTooSmallError,
    CryptokiAlreadyInitializedError,
    DbError,
    DecryptionError,
    DeviceError,
    DeviceRemovedError,
    EncryptedDataInvalidError,
    GeneralError,
    HsmError,
    InterfaceError,
    InvalidRequestError,
    KeyHandleInvalidError,
    MechanismParamInvalidError,
    NotSupportedError,
    ObjectHandleInvalidError,
    PinIncorrectError,
    PinLockedError,
    Pkcs11Error,
    SessionHandleInvalidError,
    SessionPoolTimeoutError,
    SignatureInvalidError,
    SignatureLenRangeError,
    TokenNotPresentError,
    UnauthorizedError,
    UserAlreadyLoggedInError,
    UserNotLoggedInError,
    pkcs11_error,
    rv_name,
)
from kms_iface.pkcs11 import constants

# --- Prefixes and str() --------------------------------------------------------------------------

PREFIXES: list[tuple[type[InterfaceError], str]] = [
    (InterfaceError, ""),
    (InvalidRequestError, "Invalid Request: "),
    (NotSupportedError, "Not Supported: "),
    (UnauthorizedError, "Unauthorized: "),
    (HsmError, "HSM Error: "),
    (DbError, "Database Error: "),
]


@pytest.mark.parametrize(("cls", "prefix"), PREFIXES)
def test_prefix_and_str(cls: type[InterfaceError], prefix: str) -> None:
    err = cls("slot 3 is not accessible")
    assert cls.prefix == prefix
    assert err.message == "slot 3 is not accessible"
    assert str(err) == prefix + "slot 3 is not accessible"
    assert isinstance(err, InterfaceError)
    assert isinstance(err, Exception)


def test_subclasses_share_their_parents_prefix() -> None:
    assert Pkcs11Error.prefix == "HSM Error: "
    assert DecryptionError.prefix == "HSM Error: "
    assert str(SessionPoolTimeoutError("no session for slot 0 within 5.0 s")) == (
        "HSM Error: no session for slot 0 within 5.0 s"
    )


def test_hsm_error_carries_code_fields() -> None:
    plain = HsmError("A secret key with this id already exists")
    assert (plain.rv, plain.rv_name, plain.function) == (None, None, None)
    assert str(plain) == "HSM Error: A secret key with this id already exists"

    coded = HsmError("token full", rv=0x31, function="C_GenerateKey")
    assert coded.rv == 0x31
    assert coded.rv_name == "CKR_DEVICE_MEMORY"  # filled in from the code
    assert coded.function == "C_GenerateKey"
    assert str(coded) == "HSM Error: token full"


# --- Pkcs11Error format ----------------------------------------------------------------------


def test_pkcs11_error_str_format_exact() -> None:
    assert str(Pkcs11Error(0x40, "C_Decrypt")) == (
        "HSM Error: C_Decrypt failed: CKR_ENCRYPTED_DATA_INVALID (0x40)"
    )
    err = pkcs11_error(0x40, "C_Encrypt")
    assert type(err) is EncryptedDataInvalidError
    assert str(err) == "HSM Error: C_Encrypt failed: CKR_ENCRYPTED_DATA_INVALID (0x40)"
    assert err.message == "C_Encrypt failed: CKR_ENCRYPTED_DATA_INVALID (0x40)"
    assert (err.rv, err.rv_name, err.function) == (0x40, "CKR_ENCRYPTED_DATA_INVALID", "C_Encrypt")


def test_pkcs11_error_hex_is_lowercase_and_unpadded() -> None:
    assert str(pkcs11_error(0xB3, "C_Sign")) == (
        "HSM Error: C_Sign failed: CKR_SESSION_HANDLE_INVALID (0xb3)"
    )
    assert str(pkcs11_error(0x5, "C_GenerateKey")) == (
        "HSM Error: C_GenerateKey failed: CKR_GENERAL_ERROR (0x5)"
    )


def test_named_class_without_arguments_uses_its_code() -> None:
    err = PinIncorrectError(function="C_Login")
    assert err.rv == 0xA0
    assert str(err) == "HSM Error: C_Login failed: CKR_PIN_INCORRECT (0xa0)"
    with pytest.raises(TypeError):
        Pkcs11Error()


def test_ok_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="CKR_OK"):
        pkcs11_error(CKR_OK, "C_Encrypt")


# --- Decryption failures: one class, one message, no code ------------------------------------

DECRYPT_FUNCTIONS = ["C_Decrypt", "C_DecryptUpdate", "C_DecryptFinal", "C_UnwrapKey"]
DECRYPT_CODES = [
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_AEAD_DECRYPT_FAILED,
    CKR_GENERAL_ERROR,
]


@pytest.mark.parametrize("function", DECRYPT_FUNCTIONS)
@pytest.mark.parametrize("rv", DECRYPT_CODES)
def test_decrypt_failures_become_one_generic_error(function: str, rv: int) -> None:
    err = pkcs11_error(rv, function)
    assert type(err) is DecryptionError
    assert not isinstance(err, Pkcs11Error)
    assert isinstance(err, HsmError)
    assert str(err) == "HSM Error: " + DECRYPTION_FAILED_MESSAGE
    assert (err.rv, err.rv_name) == (None, None)
    assert err.function == function
    # Nothing in the text tells which check failed.
    assert "CKR" not in str(err)
    assert not re.search(r"0x[0-9a-f]+", str(err))


def test_every_decrypt_failure_reads_the_same() -> None:
    texts = {str(pkcs11_error(rv, fn)) for rv in DECRYPT_CODES for fn in DECRYPT_FUNCTIONS}
    texts.add(str(DecryptionError()))  # the software padding check raises it directly
    assert texts == {
        "HSM Error: decryption failed: the ciphertext, IV, tag, padding or key is wrong"
    }


def test_decryption_error_takes_no_caller_message() -> None:
    with pytest.raises(TypeError):
        cast(Any, DecryptionError)("plaintext must never get here")


def test_other_codes_of_decrypt_functions_keep_their_class() -> None:
    assert type(pkcs11_error(0x60, "C_Decrypt")) is KeyHandleInvalidError
    assert type(pkcs11_error(0x32, "C_DecryptUpdate")) is DeviceRemovedError
    assert type(pkcs11_error(0xB3, "C_DecryptFinal")) is SessionHandleInvalidError


def test_decrypt_codes_elsewhere_are_not_hidden() -> None:
    assert type(pkcs11_error(CKR_GENERAL_ERROR, "C_Encrypt")) is GeneralError
    assert type(pkcs11_error(CKR_GENERAL_ERROR, "C_Sign")) is GeneralError
    err = pkcs11_error(CKR_AEAD_DECRYPT_FAILED, "C_Encrypt")
    assert type(err) is Pkcs11Error
    assert err.rv_name == "CKR_AEAD_DECRYPT_FAILED"


def test_verify_failures_map_to_signature_classes() -> None:
    assert type(pkcs11_error(0xC0, "C_Verify")) is SignatureInvalidError
    assert type(pkcs11_error(0xC1, "C_Verify")) is SignatureLenRangeError
    assert type(pkcs11_error(0xC0, "C_VerifyFinal")) is SignatureInvalidError


# --- Named classes ---------------------------------------------------------------------------

SAMPLE: list[tuple[int, type[Pkcs11Error]]] = [
    (0xA0, PinIncorrectError),
    (0xA4, PinLockedError),
    (0xB3, SessionHandleInvalidError),
    (0x60, KeyHandleInvalidError),
    (0x82, ObjectHandleInvalidError),
    (0x30, DeviceError),
    (0x32, DeviceRemovedError),
    (0xE0, TokenNotPresentError),
    (0x101, UserNotLoggedInError),
    (0x100, UserAlreadyLoggedInError),
    (0x71, MechanismParamInvalidError),
    (0x11, AttributeSensitiveError),
    (0x150, BufferTooSmallError),
    (0x191, CryptokiAlreadyInitializedError),
]


@pytest.mark.parametrize(("rv", "cls"), SAMPLE)
def test_named_class_for_code(rv: int, cls: type[Pkcs11Error]) -> None:
    err = pkcs11_error(rv, "C_Something")
    assert type(err) is cls
    assert isinstance(err, Pkcs11Error)
    assert err.rv == rv
    assert err.rv_name == CKR_NAMES[rv]
    assert str(err) == f"HSM Error: C_Something failed: {CKR_NAMES[rv]} (0x{rv:x})"


def _class_name_for(ckr_name: str) -> str:
    camel = "".join(part.capitalize() for part in ckr_name.removeprefix("CKR_").split("_"))
    return camel if camel.endswith("Error") else camel + "Error"


def test_every_named_class_matches_its_code() -> None:
    assert len(PKCS11_ERROR_CLASSES) >= 50
    assert len(set(PKCS11_ERROR_CLASSES.values())) == len(PKCS11_ERROR_CLASSES)
    for rv, cls in PKCS11_ERROR_CLASSES.items():
        assert cls.__name__ == _class_name_for(CKR_NAMES[rv])
        assert cls.code == rv
        assert issubclass(cls, Pkcs11Error)
        assert issubclass(cls, HsmError)
        assert issubclass(cls, InterfaceError)
        assert cls.__doc__ and CKR_NAMES[rv] in cls.__doc__
        assert cls.__name__ in errors.__all__


def test_unknown_and_vendor_codes() -> None:
    vendor = pkcs11_error(0x80000001, "C_Login")
    assert type(vendor) is Pkcs11Error
    assert vendor.rv_name == "CKR_VENDOR_DEFINED+0x1"
    assert str(vendor) == "HSM Error: C_Login failed: CKR_VENDOR_DEFINED+0x1 (0x80000001)"
    assert rv_name(0x80000000) == "CKR_VENDOR_DEFINED"
    assert rv_name(0x8000ABCD) == "CKR_VENDOR_DEFINED+0xabcd"
    assert rv_name(0x4242) == "CKR_UNKNOWN"
    unknown = pkcs11_error(0x4242, "C_Encrypt")
    assert type(unknown) is Pkcs11Error
    assert str(unknown) == "HSM Error: C_Encrypt failed: CKR_UNKNOWN (0x4242)"
    # A defined code without a named class.
    not_wrappable = pkcs11_error(0x69, "C_WrapKey")
    assert type(not_wrappable) is Pkcs11Error
    assert not_wrappable.rv_name == "CKR_KEY_NOT_WRAPPABLE"


def test_class_relations() -> None:
    for direct in (InvalidRequestError, NotSupportedError, UnauthorizedError, HsmError, DbError):
        assert issubclass(direct, InterfaceError)
    for hsm in (Pkcs11Error, DecryptionError, SessionPoolTimeoutError):
        assert issubclass(hsm, HsmError)
    assert not issubclass(DecryptionError, Pkcs11Error)
    assert not issubclass(HsmError, InvalidRequestError)


@pytest.mark.parametrize(
    "err",
    [
        InvalidRequestError("Object not found"),
        HsmError("x", rv=0x30, function="C_Sign"),
        pkcs11_error(0xA0, "C_Login"),
        pkcs11_error(0x80000001, "C_Login"),
        pkcs11_error(0x40, "C_Decrypt"),
        SessionPoolTimeoutError("no session"),
    ],
)
def test_errors_survive_pickling(err: InterfaceError) -> None:
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert copy.__dict__ == err.__dict__


# --- Return codes and recovery sets ----------------------------------------------------------


def test_ckr_names_unique_and_complete() -> None:
    defined = {n: v for n, v in vars(errors).items() if n.startswith("CKR_") and type(v) is int}
    # One name per value: no two CKR_ constants collide, and every one is in the table.
    assert len(CKR_NAMES) == len(defined)
    assert len(set(CKR_NAMES.values())) == len(CKR_NAMES)
    for value, name in CKR_NAMES.items():
        assert defined[name] == value
        assert rv_name(value) == name
        assert name in errors.__all__


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CKR_OK", 0x0),
        ("CKR_CANCEL", 0x1),
        ("CKR_CANT_LOCK", 0xA),
        ("CKR_ACTION_PROHIBITED", 0x1B),
        ("CKR_ENCRYPTED_DATA_INVALID", 0x40),
        ("CKR_AEAD_DECRYPT_FAILED", 0x42),
        ("CKR_KEY_HANDLE_INVALID", 0x60),
        ("CKR_OBJECT_HANDLE_INVALID", 0x82),
        ("CKR_SESSION_HANDLE_INVALID", 0xB3),
        ("CKR_UNWRAPPING_KEY_HANDLE_INVALID", 0xF0),
        ("CKR_USER_NOT_LOGGED_IN", 0x101),
        ("CKR_WRAPPED_KEY_INVALID", 0x110),
        ("CKR_CURVE_NOT_SUPPORTED", 0x140),
        ("CKR_BUFFER_TOO_SMALL", 0x150),
        ("CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x191),
        ("CKR_NEW_PIN_MODE", 0x1B0),
        ("CKR_EXCEEDED_MAX_ITERATIONS", 0x1B5),
        ("CKR_PIN_TOO_WEAK", 0x1B8),
        ("CKR_PUBLIC_KEY_INVALID", 0x1B9),
        ("CKR_FUNCTION_REJECTED", 0x200),
        ("CKR_TOKEN_RESOURCE_EXCEEDED", 0x201),
        ("CKR_OPERATION_CANCEL_FAILED", 0x202),
        ("CKR_VENDOR_DEFINED", 0x80000000),
    ],
)
def test_ckr_values(name: str, value: int) -> None:
    assert getattr(errors, name) == value
    assert CKR_NAMES[value] == name


def test_recovery_sets() -> None:
    assert {CKR_NAMES[c] for c in SESSION_LOST_CODES} == {
        "CKR_SESSION_HANDLE_INVALID",
        "CKR_SESSION_CLOSED",
        "CKR_DEVICE_REMOVED",
        "CKR_TOKEN_NOT_PRESENT",
    }
    assert {CKR_NAMES[c] for c in LOGIN_LOST_CODES} == {"CKR_USER_NOT_LOGGED_IN"}
    assert {CKR_NAMES[c] for c in STALE_HANDLE_CODES} == {
        "CKR_OBJECT_HANDLE_INVALID",
        "CKR_KEY_HANDLE_INVALID",
    }
    assert set(DECRYPT_FUNCTIONS) <= errors.DECRYPT_FUNCTIONS
    assert not SESSION_LOST_CODES & LOGIN_LOST_CODES
    assert not SESSION_LOST_CODES & STALE_HANDLE_CODES
    assert not LOGIN_LOST_CODES & STALE_HANDLE_CODES


def test_all_names_exist() -> None:
    for name in errors.__all__:
        assert hasattr(errors, name), name
    for name in constants.__all__:
        assert hasattr(constants, name), name


# --- Constants -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CKO_DATA", 0x0),
        ("CKO_PUBLIC_KEY", 0x2),
        ("CKO_PRIVATE_KEY", 0x3),
        ("CKO_SECRET_KEY", 0x4),
        ("CKK_RSA", 0x0),
        ("CKK_EC", 0x3),
        ("CKK_GENERIC_SECRET", 0x10),
        ("CKK_DES3", 0x15),
        ("CKK_AES", 0x1F),
        ("CKK_EC_EDWARDS", 0x40),
        ("CKA_CLASS", 0x0),
        ("CKA_TOKEN", 0x1),
        ("CKA_PRIVATE", 0x2),
        ("CKA_LABEL", 0x3),
        ("CKA_VALUE", 0x11),
        ("CKA_KEY_TYPE", 0x100),
        ("CKA_ID", 0x102),
        ("CKA_SENSITIVE", 0x103),
        ("CKA_ENCRYPT", 0x104),
        ("CKA_UNWRAP", 0x107),
        ("CKA_VERIFY", 0x10A),
        ("CKA_START_DATE", 0x110),
        ("CKA_END_DATE", 0x111),
        ("CKA_MODULUS", 0x120),
        ("CKA_MODULUS_BITS", 0x121),
        ("CKA_PUBLIC_EXPONENT", 0x122),
        ("CKA_PRIVATE_EXPONENT", 0x123),
        ("CKA_PRIME_1", 0x124),
        ("CKA_PRIME_2", 0x125),
        ("CKA_EXPONENT_1", 0x126),
        ("CKA_EXPONENT_2", 0x127),
        ("CKA_COEFFICIENT", 0x128),
        ("CKA_VALUE_LEN", 0x161),
        ("CKA_EXTRACTABLE", 0x162),
        ("CKA_LOCAL", 0x163),
        ("CKA_NEVER_EXTRACTABLE", 0x164),
        ("CKA_ALWAYS_SENSITIVE", 0x165),
        ("CKA_KEY_GEN_MECHANISM", 0x166),
        ("CKA_EC_PARAMS", 0x180),
        ("CKA_EC_POINT", 0x181),
        ("CKA_ALWAYS_AUTHENTICATE", 0x202),
        ("CKA_WRAP_WITH_TRUSTED", 0x210),
        ("CKA_WRAP_TEMPLATE", 0x40000211),
        ("CKA_ALLOWED_MECHANISMS", 0x40000600),
        ("CKA_VENDOR_DEFINED", 0x80000000),
        ("CKM_RSA_PKCS_KEY_PAIR_GEN", 0x0),
        ("CKM_RSA_PKCS", 0x1),
        ("CKM_RSA_X_509", 0x3),
        ("CKM_SHA1_RSA_PKCS", 0x6),
        ("CKM_RSA_PKCS_OAEP", 0x9),
        ("CKM_RSA_PKCS_PSS", 0xD),
        ("CKM_SHA1_RSA_PKCS_PSS", 0xE),
        ("CKM_SHA256_RSA_PKCS", 0x40),
        ("CKM_SHA384_RSA_PKCS", 0x41),
        ("CKM_SHA512_RSA_PKCS", 0x42),
        ("CKM_SHA256_RSA_PKCS_PSS", 0x43),
        ("CKM_SHA512_RSA_PKCS_PSS", 0x45),
        ("CKM_SHA224_RSA_PKCS", 0x46),
        ("CKM_SHA224_RSA_PKCS_PSS", 0x47),
        ("CKM_SHA_1", 0x220),
        ("CKM_SHA256", 0x250),
        ("CKM_SHA224", 0x255),
        ("CKM_SHA384", 0x260),
        ("CKM_SHA512", 0x270),
        ("CKM_GENERIC_SECRET_KEY_GEN", 0x350),
        ("CKM_EC_KEY_PAIR_GEN", 0x1040),
        ("CKM_ECDSA", 0x1041),
        ("CKM_AES_KEY_GEN", 0x1080),
        ("CKM_AES_ECB", 0x1081),
        ("CKM_AES_CBC", 0x1082),
        ("CKM_AES_MAC", 0x1083),
        ("CKM_AES_CBC_PAD", 0x1085),
        ("CKM_AES_CTR", 0x1086),
        ("CKM_AES_GCM", 0x1087),
        ("CKM_AES_CCM", 0x1088),
        ("CKM_AES_CMAC", 0x108A),
        ("CKM_AES_KEY_WRAP", 0x2109),
        ("CKM_AES_KEY_WRAP_PAD", 0x210A),
        ("CKM_AES_KEY_WRAP_KWP", 0x210B),
        ("CKM_VENDOR_DEFINED", 0x80000000),
        ("CKG_MGF1_SHA1", 1),
        ("CKG_MGF1_SHA256", 2),
        ("CKG_MGF1_SHA384", 3),
        ("CKG_MGF1_SHA512", 4),
        ("CKG_MGF1_SHA224", 5),
        ("CKZ_DATA_SPECIFIED", 1),
        ("CKU_SO", 0),
        ("CKU_USER", 1),
        ("CKU_CONTEXT_SPECIFIC", 2),
        ("CKS_RO_PUBLIC_SESSION", 0),
        ("CKS_RW_USER_FUNCTIONS", 3),
        ("CKS_RW_SO_FUNCTIONS", 4),
        ("CKF_RNG", 0x1),
        ("CKF_LOGIN_REQUIRED", 0x4),
        ("CKF_TOKEN_INITIALIZED", 0x400),
        ("CKF_SO_PIN_TO_BE_CHANGED", 0x800000),
        ("CKF_TOKEN_PRESENT", 0x1),
        ("CKF_HW_SLOT", 0x4),
        ("CKF_RW_SESSION", 0x2),
        ("CKF_SERIAL_SESSION", 0x4),
        ("CKF_LIBRARY_CANT_CREATE_OS_THREADS", 0x1),
        ("CKF_OS_LOCKING_OK", 0x2),
        ("CKF_HW", 0x1),
        ("CKF_ENCRYPT", 0x100),
        ("CKF_GENERATE_KEY_PAIR", 0x10000),
        ("CKF_DERIVE", 0x80000),
        ("CKF_EXTENSION", 0x80000000),
    ],
)
def test_constant_values(name: str, value: int) -> None:
    assert getattr(constants, name) == value


def test_unavailable_information_is_all_ones_ulong() -> None:
    all_ones = (1 << (8 * ctypes.sizeof(ctypes.c_ulong))) - 1
    assert all_ones == constants.CK_UNAVAILABLE_INFORMATION


def test_names_lookup() -> None:
    assert constants.mechanism_name(0x1087) == "CKM_AES_GCM"
    assert constants.mechanism_name(constants.CKM_SHA256_RSA_PKCS) == "CKM_SHA256_RSA_PKCS"
    assert constants.mechanism_name(0x1040) == "CKM_EC_KEY_PAIR_GEN"  # not the deprecated alias
    assert constants.mechanism_name(0x7FFF) == "0x7fff"
    assert constants.mechanism_name(0x80000001) == "0x80000001"
    assert constants.attribute_name(0x11) == "CKA_VALUE"
    assert constants.attribute_name(0x180) == "CKA_EC_PARAMS"  # not CKA_ECDSA_PARAMS
    assert constants.attribute_name(0x40000600) == "CKA_ALLOWED_MECHANISMS"
    assert constants.attribute_name(0x9999) == "0x9999"
    assert constants.key_type_name(0x3) == "CKK_EC"
    assert constants.key_type_name(0x1F) == "CKK_AES"
    assert constants.object_class_name(0x4) == "CKO_SECRET_KEY"


@pytest.mark.parametrize(
    ("prefix", "lookup"),
    [
        ("CKM_", constants.mechanism_name),
        ("CKA_", constants.attribute_name),
        ("CKK_", constants.key_type_name),
        ("CKO_", constants.object_class_name),
    ],
)
def test_reverse_lookups_round_trip(prefix: str, lookup: Any) -> None:
    defined = {n: v for n, v in vars(constants).items() if n.startswith(prefix) and type(v) is int}
    assert defined
    for value in defined.values():
        name = lookup(value)
        assert name.startswith(prefix)
        assert defined[name] == value


def test_flag_words() -> None:
    softhsm_token = (
        constants.CKF_RNG
        | constants.CKF_LOGIN_REQUIRED
        | constants.CKF_USER_PIN_INITIALIZED
        | constants.CKF_RESTORE_KEY_NOT_NEEDED
        | constants.CKF_TOKEN_INITIALIZED
    )
    assert constants.flag_words(softhsm_token, constants.TOKEN_FLAGS) == [
        "rng",
        "login_required",
        "user_pin_initialized",
        "restore_key_not_needed",
        "token_initialized",
    ]
    assert constants.flag_words(0x1, constants.SLOT_FLAGS) == ["token_present"]
    assert constants.flag_words(0x5, constants.SLOT_FLAGS) == ["token_present", "hw_slot"]
    assert constants.flag_words(0x6, constants.SESSION_FLAGS) == ["rw_session", "serial_session"]
    aes = constants.CKF_ENCRYPT | constants.CKF_DECRYPT | constants.CKF_WRAP | constants.CKF_UNWRAP
    assert constants.flag_words(aes, constants.MECHANISM_FLAGS) == [
        "encrypt",
        "decrypt",
        "wrap",
        "unwrap",
    ]
    assert constants.flag_words(0x1 | 0x10000000, constants.SLOT_FLAGS) == [
        "token_present",
        "0x10000000",
    ]
    assert constants.flag_words(0, constants.TOKEN_FLAGS) == []
    with pytest.raises(ValueError):
        constants.flag_words(-1, constants.TOKEN_FLAGS)


@pytest.mark.parametrize(
    "table",
    [
        constants.TOKEN_FLAGS,
        constants.SLOT_FLAGS,
        constants.SESSION_FLAGS,
        constants.MECHANISM_FLAGS,
    ],
)
def test_flag_tables_are_single_bits_named_after_their_constant(table: dict[int, str]) -> None:
    assert len(set(table.values())) == len(table)
    for bit, word in table.items():
        assert bit > 0
        assert bit & (bit - 1) == 0, f"{word} is not a single bit"
        assert getattr(constants, "CKF_" + word.upper()) == bit
