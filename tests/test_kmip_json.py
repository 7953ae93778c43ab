"""Cosmian's JSON codec: the spec's examples, the shape, round trips, and malformed input."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
import pytest

from kms_iface import InvalidRequestError, SecretBytes
from kms_iface.errors import MalformedKmipError
from kms_iface.kmip import (
    Attributes,
    BlockCipherMode,
    ByteStringKeyMaterial,
    Certificate,
    CertificateType,
    CryptographicAlgorithm,
    CryptographicParameters,
    CryptographicUsageMask,
    EncodingOption,
    KeyBlock,
    KeyFormatType,
    Name,
    NameType,
    ObjectType,
    PaddingMethod,
    PlainKeyValue,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentSymmetricKey,
    VendorValue,
    WrappingMethod,
    attributes_from_json,
    attributes_from_msgpack,
    attributes_to_json,
    attributes_to_msgpack,
    object_from_json,
    object_from_msgpack,
    object_to_json,
    object_to_msgpack,
)
from kms_iface.kmip.json import MAX_JSON_SIZE
from tests.test_kmip_model import SAMPLES, full_attributes, material_buffers

# The two examples of kmip.md, verbatim.
EXAMPLE_KEY = """{"SymmetricKey":{"KeyBlock":{"KeyFormatType":"TransparentSymmetricKey",
      "KeyValue":{"KeyMaterial":{"Key":[11,62,83,149]},
        "Attributes":{"CryptographicAlgorithm":"AES","CryptographicLength":256,
          "CryptographicUsageMask":2108,"KeyFormatType":"TransparentSymmetricKey",
          "ObjectType":"SymmetricKey","UniqueIdentifier":"925f2175-0676-4785-b9d9-61fff30771f3",
          "Attribute":[{"VendorIdentification":"cosmian","AttributeName":"tag",
                        "AttributeValue":{"_t":"TextString","_c":"[\\"_kk\\"]"}}]}},
      "CryptographicAlgorithm":"AES","CryptographicLength":256}}}"""

EXAMPLE_WRAPPED = """{"SymmetricKey":{"KeyBlock":{"KeyFormatType":"TransparentSymmetricKey",
      "CryptographicAlgorithm":"AES","CryptographicLength":256,
      "KeyWrappingData":{"WrappingMethod":"Encrypt",
        "EncryptionKeyInformation":{"UniqueIdentifier":"aes_wrapper",
          "CryptographicParameters":{"BlockCipherMode":"AESKeyWrapPadding","CryptographicAlgorithm":"AES"}},
        "EncodingOption":"TTLVEncoding"}}}}"""


def parsed(data: bytes | str) -> Any:
    return msgspec.json.decode(data)


# ---------------------------------------------------------------------------------------------
# The spec's examples.
# ---------------------------------------------------------------------------------------------


def test_example_key_decodes() -> None:
    key = object_from_json(EXAMPLE_KEY)
    assert isinstance(key, SymmetricKey)
    block = key.key_block()
    assert block.key_format_type is KeyFormatType.TransparentSymmetricKey
    assert block.cryptographic_algorithm is CryptographicAlgorithm.AES
    assert block.cryptographic_length == 256
    material = block.key_material()
    assert isinstance(material, TransparentSymmetricKey)
    assert isinstance(material.key, SecretBytes)
    assert material.key == bytes([11, 62, 83, 149])
    attrs = key.attributes()
    assert attrs is not None
    assert attrs.cryptographic_usage_mask == 2108
    assert attrs.object_type is ObjectType.SymmetricKey
    assert attrs.key_format_type is KeyFormatType.TransparentSymmetricKey
    assert attrs.unique_identifier == "925f2175-0676-4785-b9d9-61fff30771f3"
    assert attrs.get_tags() == {"_kk"}
    assert not key.is_wrapped()


def test_example_wrapped_key_decodes() -> None:
    key = object_from_json(EXAMPLE_WRAPPED)
    assert isinstance(key, SymmetricKey)
    assert key.is_wrapped()
    assert key.wrapping_key_uid() == "aes_wrapper"
    assert key.block.key_value is None
    wrapping = key.block.key_wrapping_data
    assert wrapping is not None
    assert wrapping.wrapping_method is WrappingMethod.Encrypt
    assert wrapping.encoding_option is EncodingOption.TTLVEncoding
    info = wrapping.encryption_key_information
    assert info is not None and info.cryptographic_parameters is not None
    assert info.cryptographic_parameters.block_cipher_mode is BlockCipherMode.AESKeyWrapPadding


@pytest.mark.parametrize("example", [EXAMPLE_KEY, EXAMPLE_WRAPPED])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_examples_re_encode_to_the_same_data(example: str, as_bytes: bool) -> None:
    data: str | bytes = example.encode() if as_bytes else example
    out = object_to_json(object_from_json(data))
    assert isinstance(out, bytes)
    assert parsed(out) == parsed(example)


def test_legacy_nist_key_wrap_is_read_as_aes_key_wrap_padding() -> None:
    legacy = EXAMPLE_WRAPPED.replace("AESKeyWrapPadding", "LegacyNISTKeyWrap")
    key = object_from_json(legacy)
    info = key.key_block().key_wrapping_data.encryption_key_information  # type: ignore[union-attr]
    assert info is not None and info.cryptographic_parameters is not None
    assert info.cryptographic_parameters.block_cipher_mode is BlockCipherMode.AESKeyWrapPadding
    out = object_to_json(key)
    assert b"LegacyNISTKeyWrap" not in out
    assert parsed(out) == parsed(EXAMPLE_WRAPPED)
    attrs = attributes_from_json(
        '{"CryptographicParameters":{"BlockCipherMode":"LegacyNISTKeyWrap"}}'
    )
    assert attrs.cryptographic_parameters == CryptographicParameters(
        block_cipher_mode=BlockCipherMode.AESKeyWrapPadding
    )


# ---------------------------------------------------------------------------------------------
# Round trips and shape.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_every_kind_round_trips(sample: str) -> None:
    obj = SAMPLES[sample]()
    data = object_to_json(obj)
    back = object_from_json(data)
    assert type(back) is type(obj)
    assert back == obj
    assert object_to_json(back) == data
    assert object_from_json(data.decode()) == obj
    for name, value, secret in material_buffers(back):
        assert type(value) is (SecretBytes if secret else bytes), name
    # Through storage and back: the same JSON.
    assert object_to_json(object_from_msgpack(object_to_msgpack(back))) == data


def test_every_attribute_field_round_trips() -> None:
    attrs = full_attributes()
    data = attributes_to_json(attrs)
    back = attributes_from_json(data)
    assert back == attrs
    for name in Attributes.__struct_fields__:
        assert getattr(back, name) == getattr(attrs, name), name
    assert attributes_from_json(data.decode()) == attrs
    assert attributes_to_json(attributes_from_msgpack(attributes_to_msgpack(back))) == data
    assert attributes_to_json(Attributes()) == b"{}"
    assert attributes_from_json(b"{}") == Attributes()


def test_object_shape() -> None:
    data = parsed(object_to_json(SAMPLES["rsa_private"]()))
    assert list(data) == ["PrivateKey"]
    body = data["PrivateKey"]
    assert "ObjectType" not in body
    block = body["KeyBlock"]
    assert block["KeyFormatType"] == "TransparentRSAPrivateKey"
    assert block["CryptographicAlgorithm"] == "RSA"
    material = block["KeyValue"]["KeyMaterial"]
    assert "_k" not in material
    assert material["Modulus"] == [0xC3] * 256  # big-endian bytes as integers
    assert material["PublicExponent"] == [1, 0, 1]
    assert material["CRTCoefficient"] == [0x25] * 128
    assert set(material) == {
        "Modulus",
        "PrivateExponent",
        "PublicExponent",
        "P",
        "Q",
        "PrimeExponentP",
        "PrimeExponentQ",
        "CRTCoefficient",
    }
    assert "Attributes" not in block["KeyValue"]


def test_byte_string_key_material_is_a_bare_array() -> None:
    data = parsed(object_to_json(SAMPLES["pkcs8_private"]()))
    material = data["PrivateKey"]["KeyBlock"]["KeyValue"]["KeyMaterial"]
    assert material[:4] == [0x30, 0x82, 0x01, 0x00]
    key = object_from_json(
        '{"SymmetricKey":{"KeyBlock":{"KeyFormatType":"Raw","KeyValue":{"KeyMaterial":[1,2,3]}}}}'
    )
    assert key.key_block().key_material() == ByteStringKeyMaterial(
        value=SecretBytes(b"\x01\x02\x03")
    )
    assert isinstance(key.key_block().key_material().value, SecretBytes)  # type: ignore[union-attr]


def test_wrapped_key_value_is_an_integer_array() -> None:
    data = parsed(object_to_json(SAMPLES["symmetric_wrapped"]()))
    block = data["SymmetricKey"]["KeyBlock"]
    assert block["KeyValue"] == [0x9A] * 40
    assert block["KeyWrappingData"]["IVCounterNonce"] == [0] * 12
    assert block["KeyWrappingData"]["MACSignature"] == [1, 2]
    assert "MACSignatureKeyInformation" in block["KeyWrappingData"]
    back = object_from_json(object_to_json(SAMPLES["symmetric_wrapped"]()))
    assert type(back.key_block().key_value) is bytes


def test_attribute_shape() -> None:
    data = parsed(attributes_to_json(full_attributes()))
    assert data["ActivationDate"] == "2024-05-01T12:30:15.123456Z"
    assert data["State"] == "Destroyed_Compromised"
    assert data["CryptographicParameters"]["PaddingMethod"] == "None"
    assert data["CryptographicParameters"]["IVLength"] == 96
    assert data["CryptographicParameters"]["PSource"] == list(b"\x00label")
    assert data["Name"][0] == {"NameValue": "my key", "NameType": "UninterpretedTextString"}
    assert data["Link"][0] == {"LinkType": "WrappingKeyLink", "LinkedObjectIdentifier": "wrapper"}
    assert data["UsageLimits"] == {
        "UsageLimitsTotal": 2**40,
        "UsageLimitsCount": 7,
        "UsageLimitsUnit": "Byte",
    }
    assert data["X509CertificateSubject"] == list(b"CN=subject")
    assert data["ObjectGroupMember"] == "GroupMemberFresh"
    values = {a["AttributeName"]: a["AttributeValue"] for a in data["Attribute"]}
    assert values["a0"] == {"_t": "TextString", "_c": "text é"}
    assert values["a2"] == {"_t": "LongInteger", "_c": 2**63 - 1}
    assert values["a3"] == {"_t": "BigInteger", "_c": [0, 255, 1]}
    assert values["a4"] == {"_t": "ByteString", "_c": [0, 1, 254]}
    assert values["a5"] == {"_t": "Boolean", "_c": False}
    assert values["a6"] == {"_t": "DateTime", "_c": "2024-02-29T12:00:01Z"}
    assert values["tag"] == {"_t": "TextString", "_c": '["_kk","user-tag"]'}


def test_defaults_are_written_and_read_when_absent() -> None:
    attrs = Attributes(name=[Name(name_value="n")])
    assert parsed(attributes_to_json(attrs)) == {
        "Name": [{"NameValue": "n", "NameType": "UninterpretedTextString"}]
    }
    back = attributes_from_json('{"Name":[{"NameValue":"n"}],"UsageLimits":{"UsageLimitsTotal":1}}')
    assert back.name == [Name(name_value="n", name_type=NameType.UninterpretedTextString)]
    assert back.usage_limits is not None and back.usage_limits.usage_limits_unit == "Object"


def test_null_reads_as_absent() -> None:
    attrs = attributes_from_json('{"Comment":null,"State":"Active"}')
    assert attrs.comment is None
    assert parsed(attributes_to_json(attrs)) == {"State": "Active"}


def test_usage_mask_flag_is_written_as_an_integer() -> None:
    mask = CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt
    attrs = Attributes(cryptographic_usage_mask=mask)
    assert parsed(attributes_to_json(attrs)) == {"CryptographicUsageMask": 12}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"2024-05-01T12:00:00Z"', datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ('"2024-05-01T14:00:00+02:00"', datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ('"2024-05-01T12:00:00.5Z"', datetime.datetime(2024, 5, 1, 12, 0, 0, 500000, datetime.UTC)),
        ("1714564800", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("0", datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)),
    ],
)
def test_dates_read_rfc3339_and_unix_seconds(text: str, expected: datetime.datetime) -> None:
    attrs = attributes_from_json('{"ActivationDate":' + text + "}")
    assert attrs.activation_date == expected
    assert attrs.activation_date is not None
    assert attrs.activation_date.utcoffset() == datetime.timedelta(0)
    out = parsed(attributes_to_json(attrs))["ActivationDate"]
    assert out.endswith("Z")
    assert attributes_from_json(attributes_to_json(attrs)) == attrs


def test_vendor_date_time_value() -> None:
    attrs = attributes_from_json(
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"d",'
        '"AttributeValue":{"_t":"DateTime","_c":"2020-01-01T00:00:00Z"}}]}'
    )
    value = attrs.get_vendor_attribute("v", "d")
    assert value == VendorValue(
        type="DateTime", value=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    )


# ---------------------------------------------------------------------------------------------
# Malformed input: MalformedKmipError with the path, nothing else.
# ---------------------------------------------------------------------------------------------


def _key_block(body: str) -> str:
    return '{"SymmetricKey":{"KeyBlock":{' + body + "}}}"


KB = "$.SymmetricKey.KeyBlock"
TSK = '"KeyFormatType":"TransparentSymmetricKey"'

MALFORMED_OBJECTS: list[tuple[str, str, str]] = [
    # (input, path, message fragment)
    ("", "$", "truncated"),
    ("not json", "$", "malformed"),
    ('{"SymmetricKey":{"KeyBlock":', "$", "truncated"),
    ('{"SymmetricKey":{}} trailing', "$", "malformed"),
    ("[1]", "$", "exactly one key"),
    ("null", "$", "exactly one key"),
    ("{}", "$", "exactly one key"),
    ('{"SymmetricKey":{},"PublicKey":{}}', "$", "exactly one key"),
    ('{"Template":{}}', "$.Template", "unknown object type"),
    ('{"SymmetricKey":[]}', "$.SymmetricKey", "expected a JSON object for SymmetricKey"),
    ('{"SymmetricKey":{}}', "$.SymmetricKey.KeyBlock", "missing required field KeyBlock"),
    ('{"SymmetricKey":{"KeyBlock":{}}}', f"{KB}.KeyFormatType", "missing required field"),
    (_key_block('"KeyFormatType":"Rawish"'), f"{KB}.KeyFormatType", "unknown KeyFormatType"),
    (_key_block('"KeyFormatType":7'), f"{KB}.KeyFormatType", "expected a KeyFormatType name"),
    (_key_block(TSK + ',"CryptographicLength":"256"'), f"{KB}.CryptographicLength", "got a string"),
    (_key_block(TSK + ',"CryptographicLength":true'), f"{KB}.CryptographicLength", "got a boolean"),
    (_key_block(TSK + ',"CryptographicLength":256.0'), f"{KB}.CryptographicLength", "got a number"),
    (
        _key_block(TSK + ',"CryptographicLength":2147483648'),
        f"{KB}.CryptographicLength",
        "-2147483648..2147483647",
    ),
    (
        _key_block(TSK + ',"CryptographicLength":99999999999999999999999'),
        f"{KB}.CryptographicLength",
        "out of range",
    ),
    (_key_block(TSK + ',"Bogus":1'), f"{KB}.Bogus", "unknown field 'Bogus' of KeyBlock"),
    (
        '{"SymmetricKey":{"ObjectType":"SymmetricKey"}}',
        "$.SymmetricKey.ObjectType",
        "unknown field",
    ),
    (_key_block(TSK + ',"KeyValue":"abc"'), f"{KB}.KeyValue", "expected an array or an object"),
    (_key_block(TSK + ',"KeyValue":{}'), f"{KB}.KeyValue.KeyMaterial", "missing required field"),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":[1,2]}'),
        f"{KB}.KeyValue.KeyMaterial",
        "expected a JSON object for TransparentSymmetricKey",
    ),
    (
        _key_block('"KeyFormatType":"PKCS8","KeyValue":{"KeyMaterial":{"Key":[1]}}'),
        f"{KB}.KeyValue.KeyMaterial",
        "expected an array of integers 0..255",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[1,256]}}'),
        f"{KB}.KeyValue.KeyMaterial.Key[1]",
        "0..255",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[-1]}}'),
        f"{KB}.KeyValue.KeyMaterial.Key[0]",
        "0..255",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[1,true]}}'),
        f"{KB}.KeyValue.KeyMaterial.Key[1]",
        "got a boolean",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":"AAEC"}}'),
        f"{KB}.KeyValue.KeyMaterial.Key",
        "expected an array of integers 0..255, got a string",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[1],"D":[2]}}'),
        f"{KB}.KeyValue.KeyMaterial.D",
        "unknown field 'D' of TransparentSymmetricKey",
    ),
    (
        _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[1]},"Attributes":{"Colour":"red"}}'),
        f"{KB}.KeyValue.Attributes.Colour",
        "unknown field 'Colour' of Attributes",
    ),
    (
        _key_block(TSK + ',"KeyValue":[300]'),
        f"{KB}.KeyValue[0]",
        "0..255",
    ),
    (
        _key_block(TSK + ',"KeyWrappingData":{"WrappingMethod":"Encrypt","EncodingOption":"X"}'),
        f"{KB}.KeyWrappingData.EncodingOption",
        "unknown EncodingOption name 'X'",
    ),
    (
        '{"Certificate":{"CertificateType":"X509","CertificateValue":[1,2,{}]}}',
        "$.Certificate.CertificateValue[2]",
        "got an object",
    ),
    (
        '{"SplitKey":{"SplitKeyParts":1,"KeyPartIdentifier":1,"SplitKeyThreshold":1,'
        '"SplitKeyMethod":"XOR","KeyBlock":{"KeyFormatType":"Raw"},"PrimeFieldSize":true}}',
        "$.SplitKey.PrimeFieldSize",
        "got a boolean",
    ),
    (
        '{"PrivateKey":{"KeyBlock":{"KeyFormatType":"TransparentECPrivateKey",'
        '"KeyValue":{"KeyMaterial":{"RecommendedCurve":"P999","D":[1]}}}}}',
        "$.PrivateKey.KeyBlock.KeyValue.KeyMaterial.RecommendedCurve",
        "unknown RecommendedCurve name",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), MALFORMED_OBJECTS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_malformed_object(text: str, path: str, fragment: str, as_bytes: bool) -> None:
    data: str | bytes = text.encode() if as_bytes else text
    with pytest.raises(MalformedKmipError) as info:
        object_from_json(data)
    error = info.value
    assert isinstance(error, InvalidRequestError)
    assert error.path == path
    assert fragment in str(error)
    if path != "$":
        assert f"at {path}:" in str(error)


MALFORMED_ATTRIBUTES: list[tuple[str, str, str]] = [
    ("[]", "$", "expected a JSON object for Attributes, got an array"),
    ('{"NotAnAttribute":1}', "$.NotAnAttribute", "unknown field 'NotAnAttribute' of Attributes"),
    ('{"State":"Pre-Active"}', "$.State", "unknown State name"),
    ('{"State":1}', "$.State", "expected a State name"),
    ('{"Sensitive":1}', "$.Sensitive", "expected a boolean, got an integer"),
    ('{"Sensitive":"true"}', "$.Sensitive", "expected a boolean, got a string"),
    ('{"CryptographicUsageMask":-1}', "$.CryptographicUsageMask", "0..4294967295"),
    ('{"CryptographicUsageMask":4294967296}', "$.CryptographicUsageMask", "out of range"),
    ('{"Comment":5}', "$.Comment", "expected a string, got an integer"),
    ('{"Link":{}}', "$.Link", "expected an array, got an object"),
    ('{"Link":[{"LinkType":"ParentLink"}]}', "$.Link[0].LinkedObjectIdentifier", "missing"),
    (
        '{"Link":[{"LinkType":"ParentLink","LinkedObjectIdentifier":"a"},{"LinkType":"Up"}]}',
        "$.Link[1].LinkType",
        "unknown LinkType name 'Up'",
    ),
    ('{"ObjectGroupMember":"GroupMemberOld"}', "$.ObjectGroupMember", "expected one of"),
    ('{"ActivationDate":"yesterday"}', "$.ActivationDate", "RFC 3339"),
    ('{"ActivationDate":"2024-05-01T12:00:00"}', "$.ActivationDate", "without offset"),
    ('{"ActivationDate":"2024-05-01"}', "$.ActivationDate", "RFC 3339"),
    ('{"ActivationDate":1e3}', "$.ActivationDate", "got a number"),
    ('{"ActivationDate":true}', "$.ActivationDate", "got a boolean"),
    ('{"ActivationDate":99999999999999999}', "$.ActivationDate", "out-of-range"),
    ('{"ActivationDate":"0001-01-01T00:00:00+01:00"}', "$.ActivationDate", "out-of-range"),
    (
        '{"UsageLimits":{"UsageLimitsTotal":9223372036854775808}}',
        "$.UsageLimits.UsageLimitsTotal",
        "",
    ),
    (
        '{"UsageLimits":{"UsageLimitsTotal":1,"UsageLimitsUnit":"Kg"}}',
        "$.UsageLimits.UsageLimitsUnit",
        "",
    ),
    (
        '{"CryptographicParameters":{"PaddingMethod":"none"}}',
        "$.CryptographicParameters.PaddingMethod",
        "unknown PaddingMethod name 'none'",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n"}]}',
        "$.Attribute[0].AttributeValue",
        "missing required field AttributeValue",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n","AttributeValue":"x"}]}',
        "$.Attribute[0].AttributeValue",
        "expected a vendor attribute value object",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"Float","_c":1.5}}]}',
        "$.Attribute[0].AttributeValue._t",
        "expected a vendor value type",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"TextString"}}]}',
        "$.Attribute[0].AttributeValue._c",
        "missing required field _c",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"TextString","_c":"x","_x":1}}]}',
        "$.Attribute[0].AttributeValue._x",
        "unknown field '_x'",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"Integer","_c":2147483648}}]}',
        "$.Attribute[0].AttributeValue._c",
        "out of range",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"Boolean","_c":0}}]}',
        "$.Attribute[0].AttributeValue._c",
        "expected a boolean",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"ByteString","_c":[1,999]}}]}',
        "$.Attribute[0].AttributeValue._c[1]",
        "0..255",
    ),
    (
        '{"Attribute":[{"VendorIdentification":"v","AttributeName":"n",'
        '"AttributeValue":{"_t":"DateTime","_c":"now"}}]}',
        "$.Attribute[0].AttributeValue._c",
        "RFC 3339",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), MALFORMED_ATTRIBUTES)
def test_malformed_attributes(text: str, path: str, fragment: str) -> None:
    with pytest.raises(MalformedKmipError) as info:
        attributes_from_json(text)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert path in str(info.value)


def test_a_long_unknown_key_is_cut_short() -> None:
    with pytest.raises(MalformedKmipError) as info:
        attributes_from_json('{"' + "X" * 10_000 + '":1}')
    assert info.value.path == "$." + "X" * 61 + "..."
    assert len(str(info.value)) < 300


def test_messages_never_show_key_bytes() -> None:
    text = _key_block(TSK + ',"KeyValue":{"KeyMaterial":{"Key":[173,219,241,4711]}}')
    with pytest.raises(MalformedKmipError) as info:
        object_from_json(text)
    message = str(info.value)
    for value in ("173", "219", "241", "4711"):
        assert value not in message
    assert info.value.path.endswith("Key[3]")


def test_invalid_utf8_is_malformed_without_quoting_bytes() -> None:
    with pytest.raises(MalformedKmipError) as info:
        object_from_json(b'{"SymmetricKey":{"\xad\xdb":1}}')
    assert info.value.path == "$"
    assert "UTF-8" in str(info.value)
    assert "0xad" not in str(info.value)
    assert "\\xad" not in str(info.value)


@pytest.mark.parametrize("data", [5, None, ["{}"], {"SymmetricKey": {}}])
def test_non_text_input_is_malformed(data: Any) -> None:
    with pytest.raises(MalformedKmipError):
        object_from_json(data)
    with pytest.raises(MalformedKmipError):
        attributes_from_json(data)


def test_deeply_nested_input_is_malformed() -> None:
    for depth in (50, 100_000):
        text = '{"SymmetricKey":' + "[" * depth + "]" * depth + "}"
        with pytest.raises(MalformedKmipError):
            object_from_json(text)
        with pytest.raises(MalformedKmipError):
            attributes_from_json("[" * depth + "]" * depth)


def test_huge_input_is_refused_before_parsing() -> None:
    data = b" " * (MAX_JSON_SIZE + 1)
    with pytest.raises(MalformedKmipError, match="larger than"):
        object_from_json(data)
    with pytest.raises(MalformedKmipError, match="larger than"):
        attributes_from_json(data)


def test_large_key_material_is_accepted() -> None:
    key = bytes(range(256)) * 64
    text = _key_block('"KeyFormatType":"Raw","KeyValue":{"KeyMaterial":' + str(list(key)) + "}")
    material = object_from_json(text).key_block().key_material()
    assert isinstance(material, ByteStringKeyMaterial)
    assert material.value == key


# ---------------------------------------------------------------------------------------------
# What cannot be written.
# ---------------------------------------------------------------------------------------------


def test_key_material_must_match_its_format_to_be_written() -> None:
    key = SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.Raw,
            key_value=PlainKeyValue(key_material=TransparentSymmetricKey(key=SecretBytes(b"k"))),
        )
    )
    with pytest.raises(MalformedKmipError) as info:
        object_to_json(key)
    assert info.value.path == "$.SymmetricKey.KeyBlock.KeyValue.KeyMaterial"
    assert "ByteStringKeyMaterial" in str(info.value)


@pytest.mark.parametrize(
    ("attrs", "path"),
    [
        (Attributes(cryptographic_length=2**31), "$.CryptographicLength"),
        (Attributes(sensitive=1), "$.Sensitive"),  # type: ignore[arg-type]
        (Attributes(cryptographic_length=True), "$.CryptographicLength"),
        (Attributes(activation_date=datetime.datetime(2024, 1, 1)), "$.ActivationDate"),
        (Attributes(state=99), "$.State"),  # type: ignore[arg-type]
        (Attributes(state=ObjectType.SymmetricKey), "$.State"),  # type: ignore[arg-type]
        (Attributes(comment=b"x"), "$.Comment"),  # type: ignore[arg-type]
        (Attributes(name=[Name(name_value=3)]), "$.Name[0].NameValue"),  # type: ignore[arg-type]
    ],
)
def test_unwritable_attributes(attrs: Attributes, path: str) -> None:
    with pytest.raises(MalformedKmipError) as info:
        attributes_to_json(attrs)
    assert info.value.path == path


def test_only_objects_are_written() -> None:
    with pytest.raises(MalformedKmipError):
        object_to_json(Attributes())  # type: ignore[arg-type]


def test_int_values_of_enums_are_written_by_name() -> None:
    attrs = Attributes(state=2)  # type: ignore[arg-type]
    assert parsed(attributes_to_json(attrs)) == {"State": "Active"}
    params = CryptographicParameters(padding_method=PaddingMethod(1))
    assert parsed(attributes_to_json(Attributes(cryptographic_parameters=params))) == {
        "CryptographicParameters": {"PaddingMethod": "None"}
    }


def test_certificate_round_trip_keeps_bytes() -> None:
    cert = Certificate(certificate_type=CertificateType.PGP, certificate_value=bytes(range(256)))
    back = object_from_json(object_to_json(cert))
    assert back == cert
    assert isinstance(back, Certificate) and type(back.certificate_value) is bytes


def test_rsa_private_key_reads_big_endian_integer_arrays() -> None:
    text = (
        '{"PrivateKey":{"KeyBlock":{"KeyFormatType":"TransparentRSAPrivateKey",'
        '"KeyValue":{"KeyMaterial":{"Modulus":[1,0,1],"PrivateExponent":[0,7]}}}}}'
    )
    material = object_from_json(text).key_block().key_material()
    assert isinstance(material, TransparentRSAPrivateKey)
    assert int.from_bytes(material.modulus, "big") == 65537
    assert material.private_exponent == b"\x00\x07"
    assert isinstance(material.private_exponent, SecretBytes)
    assert material.p is None
