# Cython view of include/kms_pkcs11.h: only what the core calls.

cdef extern from "kms_pkcs11.h" nogil:
    ctypedef unsigned char CK_BYTE
    ctypedef unsigned char CK_BBOOL
    ctypedef unsigned long CK_ULONG
    ctypedef CK_ULONG CK_RV
    ctypedef CK_ULONG CK_FLAGS
    ctypedef CK_ULONG CK_SLOT_ID
    ctypedef CK_ULONG CK_SESSION_HANDLE
    ctypedef CK_ULONG CK_OBJECT_HANDLE
    ctypedef CK_ULONG CK_MECHANISM_TYPE
    ctypedef CK_ULONG CK_ATTRIBUTE_TYPE
    ctypedef CK_ULONG CK_USER_TYPE

    CK_ULONG CK_UNAVAILABLE_INFORMATION

    ctypedef struct CK_VERSION:
        CK_BYTE major
        CK_BYTE minor

    ctypedef struct CK_INFO:
        CK_VERSION cryptokiVersion
        CK_BYTE manufacturerID[32]
        CK_FLAGS flags
        CK_BYTE libraryDescription[32]
        CK_VERSION libraryVersion

    ctypedef struct CK_SLOT_INFO:
        CK_BYTE slotDescription[64]
        CK_BYTE manufacturerID[32]
        CK_FLAGS flags
        CK_VERSION hardwareVersion
        CK_VERSION firmwareVersion

    ctypedef struct CK_TOKEN_INFO:
        CK_BYTE label[32]
        CK_BYTE manufacturerID[32]
        CK_BYTE model[16]
        CK_BYTE serialNumber[16]
        CK_FLAGS flags
        CK_ULONG ulMaxSessionCount
        CK_ULONG ulSessionCount
        CK_ULONG ulMaxRwSessionCount
        CK_ULONG ulRwSessionCount
        CK_ULONG ulMaxPinLen
        CK_ULONG ulMinPinLen
        CK_ULONG ulTotalPublicMemory
        CK_ULONG ulFreePublicMemory
        CK_ULONG ulTotalPrivateMemory
        CK_ULONG ulFreePrivateMemory
        CK_VERSION hardwareVersion
        CK_VERSION firmwareVersion
        CK_BYTE utcTime[16]

    ctypedef struct CK_SESSION_INFO:
        CK_SLOT_ID slotID
        CK_ULONG state
        CK_FLAGS flags
        CK_ULONG ulDeviceError

    ctypedef struct CK_ATTRIBUTE:
        CK_ATTRIBUTE_TYPE type
        void *pValue
        CK_ULONG ulValueLen

    ctypedef struct CK_MECHANISM:
        CK_MECHANISM_TYPE mechanism
        void *pParameter
        CK_ULONG ulParameterLen

    ctypedef struct CK_MECHANISM_INFO:
        CK_ULONG ulMinKeySize
        CK_ULONG ulMaxKeySize
        CK_FLAGS flags

    ctypedef struct CK_GCM_PARAMS:
        CK_BYTE *pIv
        CK_ULONG ulIvLen
        CK_ULONG ulIvBits
        CK_BYTE *pAAD
        CK_ULONG ulAADLen
        CK_ULONG ulTagBits

    ctypedef struct CK_RSA_PKCS_OAEP_PARAMS:
        CK_MECHANISM_TYPE hashAlg
        CK_ULONG mgf
        CK_ULONG source
        void *pSourceData
        CK_ULONG ulSourceDataLen

    ctypedef struct CK_RSA_PKCS_PSS_PARAMS:
        CK_MECHANISM_TYPE hashAlg
        CK_ULONG mgf
        CK_ULONG sLen

    ctypedef struct CK_C_INITIALIZE_ARGS:
        void *CreateMutex
        void *DestroyMutex
        void *LockMutex
        void *UnlockMutex
        CK_FLAGS flags
        void *pReserved

    ctypedef struct CK_FUNCTION_LIST:
        CK_VERSION version
        CK_RV (*C_Initialize)(void *) nogil
        CK_RV (*C_Finalize)(void *) nogil
        CK_RV (*C_GetInfo)(CK_INFO *) nogil
        CK_RV (*C_GetSlotList)(CK_BBOOL, CK_SLOT_ID *, CK_ULONG *) nogil
        CK_RV (*C_GetSlotInfo)(CK_SLOT_ID, CK_SLOT_INFO *) nogil
        CK_RV (*C_GetTokenInfo)(CK_SLOT_ID, CK_TOKEN_INFO *) nogil
        CK_RV (*C_GetMechanismList)(CK_SLOT_ID, CK_MECHANISM_TYPE *, CK_ULONG *) nogil
        CK_RV (*C_GetMechanismInfo)(CK_SLOT_ID, CK_MECHANISM_TYPE, CK_MECHANISM_INFO *) nogil
        CK_RV (*C_OpenSession)(CK_SLOT_ID, CK_FLAGS, void *, void *, CK_SESSION_HANDLE *) nogil
        CK_RV (*C_CloseSession)(CK_SESSION_HANDLE) nogil
        CK_RV (*C_CloseAllSessions)(CK_SLOT_ID) nogil
        CK_RV (*C_GetSessionInfo)(CK_SESSION_HANDLE, CK_SESSION_INFO *) nogil
        CK_RV (*C_Login)(CK_SESSION_HANDLE, CK_USER_TYPE, CK_BYTE *, CK_ULONG) nogil
        CK_RV (*C_Logout)(CK_SESSION_HANDLE) nogil
        CK_RV (*C_CreateObject)(CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *) nogil
        CK_RV (*C_DestroyObject)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE) nogil
        CK_RV (*C_GetAttributeValue)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG) nogil
        CK_RV (*C_SetAttributeValue)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG) nogil
        CK_RV (*C_FindObjectsInit)(CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG) nogil
        CK_RV (*C_FindObjects)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE *, CK_ULONG, CK_ULONG *) nogil
        CK_RV (*C_FindObjectsFinal)(CK_SESSION_HANDLE) nogil
        CK_RV (*C_EncryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE) nogil
        CK_RV (*C_Encrypt)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_EncryptUpdate)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_EncryptFinal)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_DecryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE) nogil
        CK_RV (*C_Decrypt)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_DecryptUpdate)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_DecryptFinal)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_SignInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE) nogil
        CK_RV (*C_Sign)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_VerifyInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE) nogil
        CK_RV (*C_Verify)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG) nogil
        CK_RV (*C_GenerateKey)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *) nogil
        CK_RV (*C_GenerateKeyPair)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *, CK_OBJECT_HANDLE *) nogil
        CK_RV (*C_WrapKey)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, CK_BYTE *, CK_ULONG *) nogil
        CK_RV (*C_UnwrapKey)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE, CK_BYTE *, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *) nogil
        CK_RV (*C_SeedRandom)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG) nogil
        CK_RV (*C_GenerateRandom)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG) nogil

    ctypedef struct CK_FUNCTION_LIST_3_0:
        CK_RV (*C_SessionCancel)(CK_SESSION_HANDLE, CK_FLAGS) nogil

    ctypedef struct CK_INTERFACE:
        CK_BYTE *pInterfaceName
        void *pFunctionList
        CK_FLAGS flags

    ctypedef CK_RV (*CK_C_GetFunctionList)(CK_FUNCTION_LIST **) nogil
    ctypedef CK_RV (*CK_C_GetInterface)(CK_BYTE *, CK_VERSION *, CK_INTERFACE **, CK_FLAGS) nogil

    enum:
        CKR_OK
        CKR_ARGUMENTS_BAD
        CKR_BUFFER_TOO_SMALL
        CKR_CRYPTOKI_ALREADY_INITIALIZED
        CKR_CRYPTOKI_NOT_INITIALIZED
        CKR_USER_ALREADY_LOGGED_IN
        CKR_ATTRIBUTE_SENSITIVE
        CKR_ATTRIBUTE_TYPE_INVALID
        CKR_SIGNATURE_INVALID
        CKR_SIGNATURE_LEN_RANGE
        CKR_FUNCTION_NOT_SUPPORTED
        CKF_OS_LOCKING_OK
        CKF_RW_SESSION
        CKF_SERIAL_SESSION
        CKM_AES_CBC
        CKM_AES_CBC_PAD
        CKM_AES_GCM
        CKM_RSA_PKCS
        CKM_RSA_PKCS_OAEP
        CKM_RSA_PKCS_PSS
        CKZ_DATA_SPECIFIED
