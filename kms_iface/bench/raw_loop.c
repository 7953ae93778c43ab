/*
 * raw_loop: the "raw C loop" ceiling of `kms-iface bench`.
 *
 * Loads a PKCS#11 module, initialises it with CKF_OS_LOCKING_OK, finds the token by label, opens
 * --sessions RW sessions (the most threads a burst uses), logs in once with the PIN read from
 * the first line of stdin, creates session keys (AES-256 and an RSA-2048 pair), then serves
 * bursts: each runs one case in a tight loop, one pthread per session, for a fixed duration:
 *
 *   gcm_enc / cbcpad_enc   fresh IV from getrandom() per call, C_EncryptInit + one C_Encrypt
 *                          into a preallocated big-enough buffer (no size probe)
 *   gcm_dec / cbcpad_dec   C_DecryptInit + one C_Decrypt of a ciphertext made at setup
 *   rsa_sign               CKM_SHA256_RSA_PKCS over a 32-byte payload
 *   rsa_oaep_dec           CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA1) of one fixed ciphertext
 *
 * The protocol of the Python workers (kms_iface/bench/protocol.py): once set up it prints one
 * "meta" JSON line (ready), then reads one command per line from stdin, "OP SIZE THREADS
 * SECONDS" (e.g. "gcm_enc 64 2 0.07"), runs that burst with the first THREADS sessions and
 * answers one JSON line; "quit" or the end of stdin ends it. A bad command or a failed call
 * exits non-zero with the reason on stderr.
 *
 * Build (kms_iface/bench/raw.py does it): cc -O2 raw_loop.c -o raw_loop -ldl -lpthread
 * (kms_pkcs11.h, kms_iface's PKCS#11 declarations, sits next to this file).
 * Usage: raw_loop --module PATH --token LABEL [--sessions N] < (PIN line, then commands)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "kms_pkcs11.h"

/* Constants the project header does not declare (values from the PKCS#11 2.40 specification). */
#ifndef CKA_CLASS
#define CKA_CLASS 0x00000000UL
#endif
#ifndef CKA_TOKEN
#define CKA_TOKEN 0x00000001UL
#endif
#ifndef CKA_PRIVATE
#define CKA_PRIVATE 0x00000002UL
#endif
#ifndef CKA_KEY_TYPE
#define CKA_KEY_TYPE 0x00000100UL
#endif
#ifndef CKA_SENSITIVE
#define CKA_SENSITIVE 0x00000103UL
#endif
#ifndef CKA_ENCRYPT
#define CKA_ENCRYPT 0x00000104UL
#endif
#ifndef CKA_DECRYPT
#define CKA_DECRYPT 0x00000105UL
#endif
#ifndef CKA_SIGN
#define CKA_SIGN 0x00000108UL
#endif
#ifndef CKA_VERIFY
#define CKA_VERIFY 0x0000010AUL
#endif
#ifndef CKA_MODULUS_BITS
#define CKA_MODULUS_BITS 0x00000121UL
#endif
#ifndef CKA_PUBLIC_EXPONENT
#define CKA_PUBLIC_EXPONENT 0x00000122UL
#endif
#ifndef CKA_VALUE_LEN
#define CKA_VALUE_LEN 0x00000161UL
#endif
#ifndef CKO_SECRET_KEY
#define CKO_SECRET_KEY 0x00000004UL
#endif
#ifndef CKK_AES
#define CKK_AES 0x0000001FUL
#endif
#ifndef CKU_USER
#define CKU_USER 1UL
#endif
#ifndef CKM_SHA256_RSA_PKCS
#define CKM_SHA256_RSA_PKCS 0x00000040UL
#endif
#ifndef CKM_SHA_1
#define CKM_SHA_1 0x00000220UL
#endif
#ifndef CKG_MGF1_SHA1
#define CKG_MGF1_SHA1 0x00000001UL
#endif

#define MAX_THREADS 64
#define MAX_COMMAND 256
#define MAX_PIN 256
#define WARMUP_CALLS 2
#define RSA_PAYLOAD 32
#define OUT_SLACK 512 /* output capacity beyond the payload: tags, padding, RSA blocks */
#define GCM_IV_LEN 12
#define CBC_IV_LEN 16

static CK_FUNCTION_LIST_PTR p11;

/* Keys and setup-time data shared (read-only) by all workers. */
static CK_OBJECT_HANDLE aes_key, rsa_pub, rsa_priv;
static const CK_BYTE FIXED_IV[16] = {0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                     0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42};

typedef struct worker {
    pthread_t thread;
    CK_SESSION_HANDLE session;
    const struct op_def *op;
    const CK_BYTE *in; /* payload (encrypt, sign) or the ciphertext made at setup (decrypt) */
    CK_ULONG in_len;
    CK_BYTE *out; /* preallocated, big-enough output buffer */
    CK_ULONG out_cap;
    CK_ULONG out_len; /* length of the last output */
    unsigned long count;
    double end;
    const char *failed_fn; /* the function that failed, with rv */
    CK_RV rv;
} worker_t;

typedef CK_RV (*op_fn)(worker_t *w);

typedef struct op_def {
    const char *name;
    op_fn run;                          /* one timed operation */
    op_fn make_input;                   /* decrypt cases: makes the ciphertext at setup */
    CK_ULONG (*expected_len)(CK_ULONG); /* output length for a payload size */
} op_def;

static pthread_barrier_t ready_barrier, go_barrier;
static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "raw_loop: %s\n", what);
    exit(1);
}

static void die_rv(const char *fn, CK_RV rv) {
    fprintf(stderr, "raw_loop: %s failed: CK_RV 0x%08lX\n", fn, rv);
    exit(1);
}

#define TRY(w, fn, call)           \
    do {                           \
        CK_RV rv_ = (call);        \
        if (rv_ != CKR_OK) {       \
            (w)->failed_fn = (fn); \
            return rv_;            \
        }                          \
    } while (0)

static void fresh_iv(CK_BYTE *iv, size_t len) {
    if (getrandom(iv, len, 0) != (ssize_t)len) die("getrandom failed");
}

static CK_GCM_PARAMS gcm_params(CK_BYTE *iv) {
    CK_GCM_PARAMS p = {iv, GCM_IV_LEN, GCM_IV_LEN * 8, NULL, 0, 128};
    return p;
}

static CK_RV encrypt_once(worker_t *w, CK_MECHANISM *mech, CK_OBJECT_HANDLE key) {
    CK_ULONG out_len = w->out_cap;
    TRY(w, "C_EncryptInit", p11->C_EncryptInit(w->session, mech, key));
    TRY(w, "C_Encrypt", p11->C_Encrypt(w->session, (CK_BYTE_PTR)w->in, w->in_len, w->out, &out_len));
    w->out_len = out_len;
    return CKR_OK;
}

static CK_RV decrypt_once(worker_t *w, CK_MECHANISM *mech, CK_OBJECT_HANDLE key) {
    CK_ULONG out_len = w->out_cap;
    TRY(w, "C_DecryptInit", p11->C_DecryptInit(w->session, mech, key));
    TRY(w, "C_Decrypt", p11->C_Decrypt(w->session, (CK_BYTE_PTR)w->in, w->in_len, w->out, &out_len));
    w->out_len = out_len;
    return CKR_OK;
}

static CK_RV op_gcm_enc(worker_t *w) {
    CK_BYTE iv[GCM_IV_LEN];
    fresh_iv(iv, sizeof iv);
    CK_GCM_PARAMS params = gcm_params(iv);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    return encrypt_once(w, &mech, aes_key);
}

static CK_RV op_gcm_dec(worker_t *w) {
    CK_GCM_PARAMS params = gcm_params((CK_BYTE_PTR)FIXED_IV);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    return decrypt_once(w, &mech, aes_key);
}

static CK_RV op_cbcpad_enc(worker_t *w) {
    CK_BYTE iv[CBC_IV_LEN];
    fresh_iv(iv, sizeof iv);
    CK_MECHANISM mech = {CKM_AES_CBC_PAD, iv, sizeof iv};
    return encrypt_once(w, &mech, aes_key);
}

static CK_RV op_cbcpad_dec(worker_t *w) {
    CK_MECHANISM mech = {CKM_AES_CBC_PAD, (CK_VOID_PTR)FIXED_IV, CBC_IV_LEN};
    return decrypt_once(w, &mech, aes_key);
}

static CK_RV op_rsa_sign(worker_t *w) {
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_ULONG out_len = w->out_cap;
    TRY(w, "C_SignInit", p11->C_SignInit(w->session, &mech, rsa_priv));
    TRY(w, "C_Sign", p11->C_Sign(w->session, (CK_BYTE_PTR)w->in, w->in_len, w->out, &out_len));
    w->out_len = out_len;
    return CKR_OK;
}

static CK_RSA_PKCS_OAEP_PARAMS oaep_params = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL, 0};

static CK_RV op_rsa_oaep_dec(worker_t *w) {
    CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &oaep_params, sizeof oaep_params};
    return decrypt_once(w, &mech, rsa_priv);
}

/* Setup-time ciphertexts of the decrypt cases: fixed IV; RSA-OAEP with the public key. */
static CK_RV make_gcm_input(worker_t *w) {
    CK_GCM_PARAMS params = gcm_params((CK_BYTE_PTR)FIXED_IV);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    return encrypt_once(w, &mech, aes_key);
}

static CK_RV make_cbcpad_input(worker_t *w) {
    CK_MECHANISM mech = {CKM_AES_CBC_PAD, (CK_VOID_PTR)FIXED_IV, CBC_IV_LEN};
    return encrypt_once(w, &mech, aes_key);
}

static CK_RV make_oaep_input(worker_t *w) {
    CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &oaep_params, sizeof oaep_params};
    return encrypt_once(w, &mech, rsa_pub);
}

static CK_ULONG same_len(CK_ULONG n) { return n; }
static CK_ULONG gcm_len(CK_ULONG n) { return n + 16; }
static CK_ULONG cbcpad_len(CK_ULONG n) { return (n / 16 + 1) * 16; }
static CK_ULONG rsa2048_len(CK_ULONG n) {
    (void)n;
    return 256;
}

static const op_def OPS[] = {
    {"gcm_enc", op_gcm_enc, NULL, gcm_len},
    {"gcm_dec", op_gcm_dec, make_gcm_input, same_len},
    {"cbcpad_enc", op_cbcpad_enc, NULL, cbcpad_len},
    {"cbcpad_dec", op_cbcpad_dec, make_cbcpad_input, same_len},
    {"rsa_sign", op_rsa_sign, NULL, rsa2048_len},
    {"rsa_oaep_dec", op_rsa_oaep_dec, make_oaep_input, same_len},
};
#define N_OPS (sizeof OPS / sizeof OPS[0])

static const op_def *find_op(const char *name) {
    for (size_t i = 0; i < N_OPS; i++)
        if (strcmp(OPS[i].name, name) == 0) return &OPS[i];
    return NULL;
}

typedef struct options {
    const char *module, *token;
    int sessions;
} options_t;

static void usage(void) {
    fprintf(stderr, "usage: raw_loop --module PATH --token LABEL [--sessions N] (PIN on stdin)\n");
    exit(2);
}

static void parse_args(options_t *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->sessions = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--module") == 0) o->module = v;
        else if (strcmp(a, "--token") == 0) o->token = v;
        else if (strcmp(a, "--sessions") == 0) o->sessions = atoi(v);
        else usage();
    }
    if (argc % 2 == 0 || !o->module || !o->token) usage();
    if (o->sessions < 1 || o->sessions > MAX_THREADS) usage();
}

static void load_module(const char *path) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) die(dlerror());
    CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
    if (!get_list) die("C_GetFunctionList not exported");
    CK_RV rv = get_list(&p11);
    if (rv != CKR_OK) die_rv("C_GetFunctionList", rv);
    CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    rv = p11->C_Initialize(&args);
    if (rv != CKR_OK) die_rv("C_Initialize", rv);
}

/* A blank-padded, fixed-width PKCS#11 text field compared with a C string. */
static int padded_equals(const CK_UTF8CHAR *field, size_t width, const char *text) {
    size_t n = strlen(text);
    if (n > width || memcmp(field, text, n) != 0) return 0;
    for (size_t i = n; i < width; i++)
        if (field[i] != ' ') return 0;
    return 1;
}

static CK_SLOT_ID find_slot(const char *label) {
    CK_SLOT_ID slots[256];
    CK_ULONG count = 256;
    CK_RV rv = p11->C_GetSlotList(CK_TRUE, slots, &count);
    if (rv != CKR_OK) die_rv("C_GetSlotList", rv);
    for (CK_ULONG i = 0; i < count; i++) {
        CK_TOKEN_INFO info;
        if (p11->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
        if (padded_equals(info.label, sizeof info.label, label)) return slots[i];
    }
    fprintf(stderr, "raw_loop: no token labelled '%s'\n", label);
    exit(1);
}

#define COUNT(tpl) (sizeof(tpl) / sizeof((tpl)[0]))

static void make_keys(CK_SESSION_HANDLE s) {
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
    CK_KEY_TYPE aes = CKK_AES;
    CK_ULONG aes_len = 32, bits = 2048;
    CK_BYTE exponent[] = {0x01, 0x00, 0x01};
    CK_ATTRIBUTE aes_tpl[] = {
        {CKA_CLASS, &secret, sizeof secret},      {CKA_KEY_TYPE, &aes, sizeof aes},
        {CKA_VALUE_LEN, &aes_len, sizeof aes_len}, {CKA_TOKEN, &no, sizeof no},
        {CKA_ENCRYPT, &yes, sizeof yes},          {CKA_DECRYPT, &yes, sizeof yes},
    };
    CK_ATTRIBUTE pub_tpl[] = {
        {CKA_TOKEN, &no, sizeof no},           {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},        {CKA_MODULUS_BITS, &bits, sizeof bits},
        {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent},
    };
    CK_ATTRIBUTE priv_tpl[] = {
        {CKA_TOKEN, &no, sizeof no},     {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes}, {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_SIGN, &yes, sizeof yes},
    };
    CK_MECHANISM aes_gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_MECHANISM rsa_gen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_RV rv = p11->C_GenerateKey(s, &aes_gen, aes_tpl, COUNT(aes_tpl), &aes_key);
    if (rv != CKR_OK) die_rv("C_GenerateKey", rv);
    rv = p11->C_GenerateKeyPair(s, &rsa_gen, pub_tpl, COUNT(pub_tpl), priv_tpl, COUNT(priv_tpl),
                                &rsa_pub, &rsa_priv);
    if (rv != CKR_OK) die_rv("C_GenerateKeyPair", rv);
}

/* A JSON string body from blank-padded PKCS#11 text. */
static void print_json_text(const CK_UTF8CHAR *field, size_t width) {
    while (width > 0 && field[width - 1] == ' ') width--;
    for (size_t i = 0; i < width; i++) {
        CK_UTF8CHAR c = field[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
}

static void print_meta(void) {
    CK_INFO info;
    CK_RV rv = p11->C_GetInfo(&info);
    if (rv != CKR_OK) die_rv("C_GetInfo", rv);
    printf("{\"meta\": {\"impl\": \"raw\", \"module_manufacturer\": \"");
    print_json_text(info.manufacturerID, sizeof info.manufacturerID);
    printf("\", \"module_version\": \"%d.%d\", \"cryptoki\": \"%d.%d\"}}\n",
           info.libraryVersion.major, info.libraryVersion.minor, info.cryptokiVersion.major,
           info.cryptokiVersion.minor);
    fflush(stdout);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    for (int i = 0; i < WARMUP_CALLS && !w->failed_fn; i++) w->rv = w->op->run(w);
    pthread_barrier_wait(&ready_barrier);
    pthread_barrier_wait(&go_barrier); /* the main thread sets the deadline in between */
    const double stop = deadline;
    const op_fn run = w->op->run;
    unsigned long n = 0;
    while (!w->failed_fn && now() < stop) {
        w->rv = run(w);
        n++;
    }
    w->count = n;
    w->end = now();
    return NULL;
}

static CK_BYTE *checked_malloc(size_t n) {
    CK_BYTE *p = malloc(n);
    if (!p) die("out of memory");
    return p;
}

static CK_BYTE *make_payload(CK_ULONG size) {
    CK_BYTE *p = checked_malloc(size);
    for (CK_ULONG i = 0; i < size; i++) p[i] = (CK_BYTE)(i * 131 + 7);
    return p;
}

/* The timed input: the payload itself, or (decrypt cases) its ciphertext made on worker 0. */
static CK_BYTE *make_input(const op_def *op, worker_t *w0, const CK_BYTE *payload, CK_ULONG size,
                           CK_ULONG *in_len) {
    CK_BYTE *in = checked_malloc(size + OUT_SLACK);
    if (!op->make_input) {
        memcpy(in, payload, size);
        *in_len = size;
        return in;
    }
    w0->in = payload;
    w0->in_len = size;
    w0->out = in;
    w0->out_cap = size + OUT_SLACK;
    w0->failed_fn = NULL;
    CK_RV rv = op->make_input(w0);
    if (rv != CKR_OK) die_rv(w0->failed_fn, rv);
    *in_len = w0->out_len;
    return in;
}

/* After the run: every worker's last output has the expected length (and plaintext). */
static void check_outputs(const op_def *op, const worker_t *w, int n, const CK_BYTE *payload,
                          CK_ULONG size) {
    for (int i = 0; i < n; i++) {
        if (w[i].failed_fn) die_rv(w[i].failed_fn, w[i].rv);
        if (w[i].out_len != op->expected_len(size)) die("unexpected output length");
        if (op->make_input && memcmp(w[i].out, payload, size) != 0) die("decryption mismatch");
    }
}

/* One burst: `op` over `size` bytes with the first `threads` workers for `duration` seconds. */
static void run_burst(worker_t *workers, int threads, double duration, const op_def *op,
                      CK_ULONG size) {
    CK_BYTE *payload = make_payload(size);
    CK_ULONG in_len;
    CK_BYTE *in = make_input(op, &workers[0], payload, size, &in_len);
    for (int i = 0; i < threads; i++) {
        worker_t *w = &workers[i];
        w->op = op;
        w->in = in;
        w->in_len = in_len;
        w->out_cap = size + OUT_SLACK;
        w->out = checked_malloc(w->out_cap);
        w->failed_fn = NULL;
    }
    pthread_barrier_init(&ready_barrier, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&go_barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
            die("pthread_create failed");
    pthread_barrier_wait(&ready_barrier);
    const double start = now();
    deadline = start + duration;
    pthread_barrier_wait(&go_barrier);
    unsigned long total = 0;
    double end = start;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].count;
        if (workers[i].end > end) end = workers[i].end;
    }
    check_outputs(op, workers, threads, payload, size);
    printf("{\"impl\": \"raw\", \"op\": \"%s\", \"size\": %lu, \"threads\": %d, \"ops\": %lu, "
           "\"seconds\": %.6f, \"ops_per_s\": %.3f}\n",
           op->name, size, threads, total, end - start, (double)total / (end - start));
    fflush(stdout);
    pthread_barrier_destroy(&ready_barrier);
    pthread_barrier_destroy(&go_barrier);
    for (int i = 0; i < threads; i++) free(workers[i].out);
    free(in);
    free(payload);
}

static void bad_command(const char *line) {
    fprintf(stderr, "raw_loop: bad command '%s': expected OP SIZE THREADS SECONDS or quit\n", line);
    exit(2);
}

/* Run the burst each line of stdin asks for, until "quit" or the end of stdin. */
static void serve(worker_t *workers, int sessions) {
    char line[MAX_COMMAND];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "quit") == 0) return;
        char name[32], extra;
        unsigned long size;
        int threads;
        double duration;
        if (sscanf(line, "%31s %lu %d %lf %c", name, &size, &threads, &duration, &extra) != 4)
            bad_command(line);
        const op_def *op = find_op(name);
        if (!op || size == 0 || threads < 1 || threads > sessions || !(duration > 0))
            bad_command(line);
        run_burst(workers, threads, duration, op, size);
    }
}

/* The PIN: the first line of stdin, without its line end. */
static void read_pin(char *pin, size_t size) {
    if (!fgets(pin, (int)size, stdin)) die("no PIN line on stdin");
    pin[strcspn(pin, "\r\n")] = '\0';
}

int main(int argc, char **argv) {
    options_t o;
    char pin[MAX_PIN];
    parse_args(&o, argc, argv);
    read_pin(pin, sizeof pin);
    load_module(o.module);
    CK_SLOT_ID slot = find_slot(o.token);
    static worker_t workers[MAX_THREADS];
    for (int i = 0; i < o.sessions; i++) {
        CK_RV rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                      &workers[i].session);
        if (rv != CKR_OK) die_rv("C_OpenSession", rv);
    }
    CK_RV rv = p11->C_Login(workers[0].session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    memset(pin, 0, sizeof pin);
    if (rv != CKR_OK) die_rv("C_Login", rv);
    make_keys(workers[0].session);
    print_meta();
    serve(workers, o.sessions);
    p11->C_Finalize(NULL);
    return 0;
}
