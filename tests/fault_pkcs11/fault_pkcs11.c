/*
 * A fault-injecting PKCS#11 module (test equipment): it dlopens the module named by
 * $FAULT_PKCS11_TARGET (SoftHSM2), forwards every call through its function list and injects
 * the faults described by $FAULT_PKCS11_SPEC, or by the file named in $FAULT_PKCS11_FILE
 * (re-read whenever its modification time or size changes). Rules are separated by ';' or
 * newlines; each is `FUNCTION[:option...]` where FUNCTION is a C_ name or `*`:
 *   rv=NAME|0xHEX   return this CK_RV (CKR_ prefix optional) instead of forwarding
 *   post            with rv=: forward the call first, then return rv (the reply is lost)
 *   len=N           with rv=BUFFER_TOO_SMALL: report N as the needed length (default: the
 *                   length passed in, so the caller never gets enough)
 *   nth=N           fire on the Nth matching call only (counted from the last (re)load)
 *   every=N         fire on every Nth matching call
 *   prob=P          fire with probability P (0..1)
 *   times=N         fire at most N times
 *   delay=MS        sleep MS milliseconds before forwarding (whenever the rule fires)
 *   reboot          "device reboot": close every session of every slot (which ends the login),
 *                   forget every handle (old handles then answer SESSION_HANDLE_INVALID), forward
 *   attrlen=N       C_GetAttributeValue: after success, report ulValueLen N bytes larger than
 *                   the buffer for every attribute with a buffer
 *   scribble        C_EncryptInit/C_DecryptInit with AES-GCM: after forwarding, overwrite the
 *                   IV bytes, IV bits and tag bits the caller passed
 * With no nth/every/prob a rule fires on every matching call. Session handles given to the
 * caller are the module's own (never reused), and C_GetTokenInfo reports their count in
 * ulSessionCount/ulRwSessionCount. $FAULT_PKCS11_SEED seeds the random generator.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kms_pkcs11.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_RULES 64
#define TABLE_BITS 16
#define TABLE_SIZE (1u << TABLE_BITS)

#define CKR_GENERAL_ERROR 0x05UL
#define CKR_FUNCTION_FAILED 0x06UL
#define CKR_DEVICE_ERROR 0x30UL
#define CKR_DEVICE_REMOVED 0x32UL
#define CKR_SESSION_CLOSED 0xB0UL
#define CKR_SESSION_COUNT 0xB1UL
#define CKR_SESSION_HANDLE_INVALID 0xB3UL
#define CKR_TOKEN_NOT_PRESENT 0xE0UL
#define CKR_USER_NOT_LOGGED_IN 0x101UL
#define CKR_HOST_MEMORY 0x02UL

enum { F_ANY = -1 };

typedef struct {
    char fn[40];
    int has_rv, post, reboot, scribble;
    CK_RV rv;
    long len; /* -1: the length passed in */
    long nth, every, times, fired;
    double prob;
    long delay_ms;
    long attrlen;
    unsigned long calls;
} rule_t;

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST table;
static void *dl;

static pthread_mutex_t rules_lock = PTHREAD_MUTEX_INITIALIZER;
static rule_t rules[MAX_RULES];
static int n_rules;
static char *loaded_text;
static struct timespec file_mtime;
static off_t file_size = -1;
static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;

/* Session handle table: the caller's handle -> SoftHSM2's handle. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t reboot_lock;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct { CK_SESSION_HANDLE virt, realh; CK_SLOT_ID slot; } handles[TABLE_SIZE];
static unsigned long next_serial = 1;
static unsigned long open_count;

static void init_locks(void) {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&reboot_lock, &attr);
    const char *seed = getenv("FAULT_PKCS11_SEED");
    if (seed) rng_state ^= strtoull(seed, NULL, 0) * 0xBF58476D1CE4E5B9ULL;
    else rng_state ^= (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
}

static double random01(void) { /* splitmix64, under rules_lock */
    unsigned long long z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static const struct { const char *name; CK_RV rv; } rv_names[] = {
    {"DEVICE_ERROR", CKR_DEVICE_ERROR}, {"SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"SESSION_CLOSED", CKR_SESSION_CLOSED}, {"DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT}, {"USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"FUNCTION_FAILED", CKR_FUNCTION_FAILED}, {"BUFFER_TOO_SMALL", CKR_BUFFER_TOO_SMALL},
    {"GENERAL_ERROR", CKR_GENERAL_ERROR}, {"HOST_MEMORY", CKR_HOST_MEMORY},
    {"SESSION_COUNT", CKR_SESSION_COUNT}, {NULL, 0},
};

static int parse_rv(const char *text, CK_RV *out) {
    if (strncasecmp(text, "CKR_", 4) == 0) text += 4;
    for (int i = 0; rv_names[i].name; i++)
        if (strcasecmp(text, rv_names[i].name) == 0) { *out = rv_names[i].rv; return 1; }
    char *end;
    unsigned long v = strtoul(text, &end, 0);
    if (end == text || *end) return 0;
    *out = v;
    return 1;
}

static void parse_rule(char *text) {
    while (*text == ' ' || *text == '\t') text++;
    if (!*text || *text == '#' || n_rules >= MAX_RULES) return;
    rule_t r;
    memset(&r, 0, sizeof r);
    r.len = -1;
    char *save = NULL;
    char *tok = strtok_r(text, ":", &save);
    if (!tok) return;
    snprintf(r.fn, sizeof r.fn, "%s", tok);
    char *end = r.fn + strlen(r.fn);
    while (end > r.fn && (end[-1] == ' ' || end[-1] == '\r')) *--end = 0;
    while ((tok = strtok_r(NULL, ":", &save))) {
        char *eq = strchr(tok, '=');
        char *val = eq ? eq + 1 : "";
        if (eq) *eq = 0;
        char *e = tok + strlen(tok);
        while (e > tok && (e[-1] == ' ' || e[-1] == '\r')) *--e = 0;
        if (!strcmp(tok, "rv")) r.has_rv = parse_rv(val, &r.rv);
        else if (!strcmp(tok, "post")) r.post = 1;
        else if (!strcmp(tok, "len")) r.len = strtol(val, NULL, 0);
        else if (!strcmp(tok, "nth")) r.nth = strtol(val, NULL, 0);
        else if (!strcmp(tok, "every")) r.every = strtol(val, NULL, 0);
        else if (!strcmp(tok, "times")) r.times = strtol(val, NULL, 0);
        else if (!strcmp(tok, "prob")) r.prob = strtod(val, NULL);
        else if (!strcmp(tok, "delay")) r.delay_ms = strtol(val, NULL, 0);
        else if (!strcmp(tok, "reboot")) r.reboot = 1;
        else if (!strcmp(tok, "attrlen")) r.attrlen = strtol(val, NULL, 0);
        else if (!strcmp(tok, "scribble")) r.scribble = 1;
        else fprintf(stderr, "fault_pkcs11: unknown option %s\n", tok);
    }
    rules[n_rules++] = r;
}

static void load_text(const char *text) { /* under rules_lock */
    if (loaded_text && !strcmp(loaded_text, text)) return;
    free(loaded_text);
    loaded_text = strdup(text);
    n_rules = 0;
    char *copy = strdup(text), *save = NULL;
    for (char *line = strtok_r(copy, ";\n", &save); line; line = strtok_r(NULL, ";\n", &save))
        parse_rule(line);
    free(copy);
}

static void refresh(void) { /* under rules_lock */
    const char *path = getenv("FAULT_PKCS11_FILE");
    if (!path) {
        const char *spec = getenv("FAULT_PKCS11_SPEC");
        load_text(spec ? spec : "");
        return;
    }
    struct stat st;
    if (stat(path, &st) != 0) { load_text(""); file_size = -1; return; }
    if (st.st_size == file_size && st.st_mtim.tv_sec == file_mtime.tv_sec &&
        st.st_mtim.tv_nsec == file_mtime.tv_nsec)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    file_size = st.st_size;
    file_mtime = st.st_mtim;
    free(loaded_text);
    loaded_text = NULL; /* a rewritten file restarts the counters even with the same text */
    load_text(buf);
}

typedef struct {
    int fail, post, reboot, scribble;
    CK_RV rv;
    long len, delay_ms, attrlen;
} fault_t;

/* Which rules fire for this call of `fn`; counters advance for every matching rule. */
static fault_t decide(const char *fn) {
    fault_t f;
    memset(&f, 0, sizeof f);
    f.len = -1;
    pthread_mutex_lock(&rules_lock);
    refresh();
    for (int i = 0; i < n_rules; i++) {
        rule_t *r = &rules[i];
        if (strcmp(r->fn, "*") && strcmp(r->fn, fn)) continue;
        unsigned long call = ++r->calls;
        int fire = 1;
        if (r->nth) fire = call == (unsigned long)r->nth;
        else if (r->every) fire = call % (unsigned long)r->every == 0;
        if (fire && r->prob > 0) fire = random01() < r->prob;
        if (fire && r->times && r->fired >= r->times) fire = 0;
        if (!fire) continue;
        r->fired++;
        if (r->has_rv && !f.fail) { f.fail = 1; f.rv = r->rv; f.post = r->post; f.len = r->len; }
        if (r->reboot) f.reboot = 1;
        if (r->scribble) f.scribble = 1;
        if (r->delay_ms) f.delay_ms += r->delay_ms;
        if (r->attrlen) f.attrlen = r->attrlen;
    }
    pthread_mutex_unlock(&rules_lock);
    return f;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

/* -- session handles ---------------------------------------------------------------------- */

static CK_SESSION_HANDLE add_handle(CK_SESSION_HANDLE realh, CK_SLOT_ID slot) {
    pthread_mutex_lock(&table_lock);
    CK_SESSION_HANDLE v = 0;
    for (unsigned long tries = 0; tries < TABLE_SIZE; tries++) {
        unsigned long serial = next_serial++;
        unsigned idx = serial & (TABLE_SIZE - 1);
        if (idx == 0 || handles[idx].virt) continue;
        v = (CK_SESSION_HANDLE)serial;
        handles[idx].virt = v;
        handles[idx].realh = realh;
        handles[idx].slot = slot;
        open_count++;
        break;
    }
    pthread_mutex_unlock(&table_lock);
    return v;
}

static int lookup(CK_SESSION_HANDLE v, CK_SESSION_HANDLE *realh) {
    pthread_mutex_lock(&table_lock);
    unsigned idx = v & (TABLE_SIZE - 1);
    int ok = v && handles[idx].virt == v;
    if (ok) *realh = handles[idx].realh;
    pthread_mutex_unlock(&table_lock);
    return ok;
}

static void drop_handle(CK_SESSION_HANDLE v) {
    pthread_mutex_lock(&table_lock);
    unsigned idx = v & (TABLE_SIZE - 1);
    if (v && handles[idx].virt == v) { handles[idx].virt = 0; open_count--; }
    pthread_mutex_unlock(&table_lock);
}

static void drop_slot(CK_SLOT_ID slot, int all) {
    pthread_mutex_lock(&table_lock);
    for (unsigned i = 0; i < TABLE_SIZE; i++)
        if (handles[i].virt && (all || handles[i].slot == slot)) { handles[i].virt = 0; open_count--; }
    pthread_mutex_unlock(&table_lock);
}

static unsigned long count_slot(CK_SLOT_ID slot) {
    unsigned long n = 0;
    pthread_mutex_lock(&table_lock);
    for (unsigned i = 0; i < TABLE_SIZE; i++)
        if (handles[i].virt && handles[i].slot == slot) n++;
    pthread_mutex_unlock(&table_lock);
    return n;
}

/* Close every real session of every slot (SoftHSM2 then logs out) and forget every handle.
   Called without the reboot read lock held. */
static void do_reboot(void) {
    pthread_rwlock_wrlock(&reboot_lock);
    CK_ULONG count = 0;
    if (real->C_GetSlotList(CK_FALSE, NULL, &count) == CKR_OK && count) {
        CK_SLOT_ID *slots = calloc(count, sizeof *slots);
        if (slots && real->C_GetSlotList(CK_FALSE, slots, &count) == CKR_OK)
            for (CK_ULONG i = 0; i < count; i++) real->C_CloseAllSessions(slots[i]);
        free(slots);
    }
    drop_slot(0, 1);
    pthread_rwlock_unlock(&reboot_lock);
}

/* -- the wrappers -------------------------------------------------------------------------- */

static int is_lost(CK_RV rv) {
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
           rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

/* What a real module's failure implies: SESSION_HANDLE_INVALID/CLOSED, the session is gone;
   DEVICE_REMOVED/TOKEN_NOT_PRESENT, every session is gone (as after a reboot);
   USER_NOT_LOGGED_IN, the token's login is gone. */
static void side_effects(const fault_t *f, CK_SESSION_HANDLE h) {
    if (f->rv == CKR_SESSION_HANDLE_INVALID || f->rv == CKR_SESSION_CLOSED) {
        CK_SESSION_HANDLE rh;
        pthread_rwlock_rdlock(&reboot_lock);
        if (h && lookup(h, &rh)) { real->C_CloseSession(rh); drop_handle(h); }
        pthread_rwlock_unlock(&reboot_lock);
    } else if (f->rv == CKR_DEVICE_REMOVED || f->rv == CKR_TOKEN_NOT_PRESENT) {
        do_reboot();
    } else if (f->rv == CKR_USER_NOT_LOGGED_IN) {
        CK_SESSION_HANDLE rh;
        pthread_rwlock_rdlock(&reboot_lock);
        if (h && lookup(h, &rh)) real->C_Logout(rh);
        pthread_rwlock_unlock(&reboot_lock);
    }
}

/* Prologue of every wrapper: faults decided, reboot done, read lock taken. A code injected
   into a call that ends its operation on error (`ends`) is returned after forwarding, so the
   operation ends as the specification says. */
#define ENTER_S(name, h, ends)                                                          \
    CK_SESSION_HANDLE fault_h = (h);                                                    \
    fault_t f = decide(name);                                                           \
    if (f.delay_ms) sleep_ms(f.delay_ms);                                               \
    if (f.reboot) do_reboot();                                                          \
    if (f.fail && !f.post && f.rv != CKR_BUFFER_TOO_SMALL) {                            \
        if ((ends) && !is_lost(f.rv)) f.post = 1;                                       \
        else { side_effects(&f, fault_h); return f.rv; }                                \
    }                                                                                   \
    pthread_rwlock_rdlock(&reboot_lock);                                                \
    CK_RV rv;

#define ENTER(name) ENTER_S(name, 0, 0)

#define LEAVE                                                                           \
    pthread_rwlock_unlock(&reboot_lock);                                                \
    if (f.fail && f.post) { side_effects(&f, fault_h); return f.rv; }                   \
    return rv;

#define SESSION(h)                                       \
    CK_SESSION_HANDLE rh;                                \
    if (!lookup(h, &rh)) { rv = CKR_SESSION_HANDLE_INVALID; LEAVE }

/* BUFFER_TOO_SMALL with a wrong length: answer before forwarding when a buffer was given. */
#define TOO_SMALL(buf, plen)                                                   \
    if (f.fail && !f.post && f.rv == CKR_BUFFER_TOO_SMALL) {                   \
        if ((buf) != NULL && (plen) != NULL) {                                 \
            if (f.len >= 0) *(plen) = (CK_ULONG)f.len;                         \
            rv = CKR_BUFFER_TOO_SMALL; LEAVE                                   \
        }                                                                      \
        f.fail = 0;                                                            \
    }

#define NO_TOO_SMALL                                                           \
    if (f.fail && !f.post && f.rv == CKR_BUFFER_TOO_SMALL) { rv = f.rv; LEAVE }

static CK_RV w_Initialize(CK_VOID_PTR a) { ENTER("C_Initialize") NO_TOO_SMALL rv = real->C_Initialize(a); LEAVE }
static CK_RV w_Finalize(CK_VOID_PTR a) {
    ENTER("C_Finalize") NO_TOO_SMALL rv = real->C_Finalize(a);
    if (rv == CKR_OK) drop_slot(0, 1);
    LEAVE
}
static CK_RV w_GetInfo(CK_INFO *i) { ENTER("C_GetInfo") NO_TOO_SMALL rv = real->C_GetInfo(i); LEAVE }
static CK_RV w_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp);
static CK_RV w_GetSlotList(CK_BBOOL p, CK_SLOT_ID_PTR l, CK_ULONG_PTR c) {
    ENTER("C_GetSlotList") TOO_SMALL(l, c) rv = real->C_GetSlotList(p, l, c); LEAVE
}
static CK_RV w_GetSlotInfo(CK_SLOT_ID s, CK_SLOT_INFO *i) { ENTER("C_GetSlotInfo") NO_TOO_SMALL rv = real->C_GetSlotInfo(s, i); LEAVE }
static CK_RV w_GetTokenInfo(CK_SLOT_ID s, CK_TOKEN_INFO *i) {
    ENTER("C_GetTokenInfo") NO_TOO_SMALL rv = real->C_GetTokenInfo(s, i);
    if (rv == CKR_OK) i->ulSessionCount = i->ulRwSessionCount = count_slot(s);
    LEAVE
}
static CK_RV w_GetMechanismList(CK_SLOT_ID s, CK_MECHANISM_TYPE_PTR l, CK_ULONG_PTR c) {
    ENTER("C_GetMechanismList") TOO_SMALL(l, c) rv = real->C_GetMechanismList(s, l, c); LEAVE
}
static CK_RV w_GetMechanismInfo(CK_SLOT_ID s, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *i) {
    ENTER("C_GetMechanismInfo") NO_TOO_SMALL rv = real->C_GetMechanismInfo(s, t, i); LEAVE
}
static CK_RV w_OpenSession(CK_SLOT_ID s, CK_FLAGS fl, CK_VOID_PTR app, CK_NOTIFY n, CK_SESSION_HANDLE_PTR ph) {
    ENTER("C_OpenSession") NO_TOO_SMALL
    CK_SESSION_HANDLE h = 0;
    rv = real->C_OpenSession(s, fl, app, n, &h);
    if (rv == CKR_OK) {
        CK_SESSION_HANDLE v = add_handle(h, s);
        if (!v) { real->C_CloseSession(h); rv = CKR_SESSION_COUNT; }
        else if (f.fail && f.post) real->C_CloseSession(h), drop_handle(v); /* reply lost */
        else *ph = v;
    }
    LEAVE
}
static CK_RV w_CloseSession(CK_SESSION_HANDLE h) {
    ENTER_S("C_CloseSession", h, 0) NO_TOO_SMALL SESSION(h)
    rv = real->C_CloseSession(rh);
    if (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) drop_handle(h);
    LEAVE
}
static CK_RV w_CloseAllSessions(CK_SLOT_ID s) {
    ENTER("C_CloseAllSessions") NO_TOO_SMALL rv = real->C_CloseAllSessions(s);
    if (rv == CKR_OK) drop_slot(s, 0);
    LEAVE
}
static CK_RV w_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO *i) {
    ENTER_S("C_GetSessionInfo", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_GetSessionInfo(rh, i); LEAVE
}
static CK_RV w_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n) {
    ENTER_S("C_Login", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_Login(rh, u, p, n); LEAVE
}
static CK_RV w_Logout(CK_SESSION_HANDLE h) { ENTER_S("C_Logout", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_Logout(rh); LEAVE }
static CK_RV w_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG c, CK_OBJECT_HANDLE_PTR o) {
    ENTER_S("C_CreateObject", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_CreateObject(rh, t, c, o); LEAVE
}
static CK_RV w_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o) {
    ENTER_S("C_DestroyObject", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_DestroyObject(rh, o); LEAVE
}
static CK_RV w_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG c) {
    ENTER_S("C_GetAttributeValue", h, 0) SESSION(h)
    if (f.fail && !f.post && f.rv == CKR_BUFFER_TOO_SMALL) {
        int any = 0;
        for (CK_ULONG i = 0; i < c; i++)
            if (t[i].pValue) { any = 1; if (f.len >= 0) t[i].ulValueLen = (CK_ULONG)f.len; }
        if (any) { rv = CKR_BUFFER_TOO_SMALL; LEAVE }
        f.fail = 0;
    }
    rv = real->C_GetAttributeValue(rh, o, t, c);
    if (rv == CKR_OK && f.attrlen)
        for (CK_ULONG i = 0; i < c; i++)
            if (t[i].pValue && t[i].ulValueLen != CK_UNAVAILABLE_INFORMATION)
                t[i].ulValueLen += (CK_ULONG)f.attrlen;
    LEAVE
}
static CK_RV w_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG c) {
    ENTER_S("C_SetAttributeValue", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_SetAttributeValue(rh, o, t, c); LEAVE
}
static CK_RV w_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG c) {
    ENTER_S("C_FindObjectsInit", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_FindObjectsInit(rh, t, c); LEAVE
}
static CK_RV w_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG m, CK_ULONG_PTR c) {
    ENTER_S("C_FindObjects", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_FindObjects(rh, o, m, c); LEAVE
}
static CK_RV w_FindObjectsFinal(CK_SESSION_HANDLE h) {
    ENTER_S("C_FindObjectsFinal", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_FindObjectsFinal(rh); LEAVE
}

static void scribble(CK_MECHANISM_PTR m) {
    if (!m || m->mechanism != CKM_AES_GCM || !m->pParameter || m->ulParameterLen < sizeof(CK_GCM_PARAMS)) return;
    CK_GCM_PARAMS *p = m->pParameter;
    if (p->pIv) memset(p->pIv, 0xA5, p->ulIvLen);
    p->ulIvBits = 0;
    p->ulTagBits = 0;
}

static CK_RV w_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) {
    ENTER_S("C_EncryptInit", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_EncryptInit(rh, m, k);
    if (f.scribble) scribble(m);
    LEAVE
}
static CK_RV w_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) {
    ENTER_S("C_DecryptInit", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_DecryptInit(rh, m, k);
    if (f.scribble) scribble(m);
    LEAVE
}
#define CRYPT(NAME, FIELD)                                                                     \
    static CK_RV w_##FIELD(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, \
                           CK_ULONG_PTR outlen) {                                             \
        ENTER_S(NAME, h, 1) SESSION(h) TOO_SMALL(out, outlen)                                          \
        rv = real->FIELD(rh, in, n, out, outlen); LEAVE                                        \
    }
CRYPT("C_Encrypt", C_Encrypt)
CRYPT("C_EncryptUpdate", C_EncryptUpdate)
CRYPT("C_Decrypt", C_Decrypt)
CRYPT("C_DecryptUpdate", C_DecryptUpdate)
CRYPT("C_Sign", C_Sign)

static CK_RV w_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
    ENTER_S("C_EncryptFinal", h, 1) SESSION(h) TOO_SMALL(out, outlen) rv = real->C_EncryptFinal(rh, out, outlen); LEAVE
}
static CK_RV w_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
    ENTER_S("C_DecryptFinal", h, 1) SESSION(h) TOO_SMALL(out, outlen) rv = real->C_DecryptFinal(rh, out, outlen); LEAVE
}
static CK_RV w_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) {
    ENTER_S("C_SignInit", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_SignInit(rh, m, k); LEAVE
}
static CK_RV w_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) {
    ENTER_S("C_VerifyInit", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_VerifyInit(rh, m, k); LEAVE
}
static CK_RV w_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG sn) {
    ENTER_S("C_Verify", h, 1) NO_TOO_SMALL SESSION(h) rv = real->C_Verify(rh, d, n, s, sn); LEAVE
}
static CK_RV w_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG c, CK_OBJECT_HANDLE_PTR k) {
    ENTER_S("C_GenerateKey", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_GenerateKey(rh, m, t, c, k); LEAVE
}
static CK_RV w_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pc,
                               CK_ATTRIBUTE_PTR st, CK_ULONG sc, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR sk) {
    ENTER_S("C_GenerateKeyPair", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_GenerateKeyPair(rh, m, pt, pc, st, sc, pk, sk); LEAVE
}
static CK_RV w_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k,
                       CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
    ENTER_S("C_WrapKey", h, 0) SESSION(h) TOO_SMALL(out, outlen) rv = real->C_WrapKey(rh, m, wk, k, out, outlen); LEAVE
}
static CK_RV w_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE uk, CK_BYTE_PTR w, CK_ULONG wn,
                         CK_ATTRIBUTE_PTR t, CK_ULONG c, CK_OBJECT_HANDLE_PTR k) {
    ENTER_S("C_UnwrapKey", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_UnwrapKey(rh, m, uk, w, wn, t, c, k); LEAVE
}
static CK_RV w_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG n) {
    ENTER_S("C_SeedRandom", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_SeedRandom(rh, s, n); LEAVE
}
static CK_RV w_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG n) {
    ENTER_S("C_GenerateRandom", h, 0) NO_TOO_SMALL SESSION(h) rv = real->C_GenerateRandom(rh, s, n); LEAVE
}

static CK_RV w_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp) {
    if (!pp) return CKR_ARGUMENTS_BAD;
    *pp = &table;
    return CKR_OK;
}

static CK_RV load_target(void) {
    pthread_once(&once, init_locks);
    if (real) return CKR_OK;
    const char *path = getenv("FAULT_PKCS11_TARGET");
    if (!path) { fprintf(stderr, "fault_pkcs11: FAULT_PKCS11_TARGET is not set\n"); return CKR_GENERAL_ERROR; }
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) { fprintf(stderr, "fault_pkcs11: %s\n", dlerror()); return CKR_GENERAL_ERROR; }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    CK_FUNCTION_LIST *list = NULL;
    if (!get || get(&list) != CKR_OK || !list) return CKR_GENERAL_ERROR;
    table = *list; /* unused entries forwarded as they are */
    table.C_Initialize = w_Initialize;
    table.C_Finalize = w_Finalize;
    table.C_GetInfo = w_GetInfo;
    table.C_GetFunctionList = w_GetFunctionList;
    table.C_GetSlotList = w_GetSlotList;
    table.C_GetSlotInfo = w_GetSlotInfo;
    table.C_GetTokenInfo = w_GetTokenInfo;
    table.C_GetMechanismList = w_GetMechanismList;
    table.C_GetMechanismInfo = w_GetMechanismInfo;
    table.C_OpenSession = w_OpenSession;
    table.C_CloseSession = w_CloseSession;
    table.C_CloseAllSessions = w_CloseAllSessions;
    table.C_GetSessionInfo = w_GetSessionInfo;
    table.C_Login = w_Login;
    table.C_Logout = w_Logout;
    table.C_CreateObject = w_CreateObject;
    table.C_DestroyObject = w_DestroyObject;
    table.C_GetAttributeValue = w_GetAttributeValue;
    table.C_SetAttributeValue = w_SetAttributeValue;
    table.C_FindObjectsInit = w_FindObjectsInit;
    table.C_FindObjects = w_FindObjects;
    table.C_FindObjectsFinal = w_FindObjectsFinal;
    table.C_EncryptInit = w_EncryptInit;
    table.C_Encrypt = w_C_Encrypt;
    table.C_EncryptUpdate = w_C_EncryptUpdate;
    table.C_EncryptFinal = w_EncryptFinal;
    table.C_DecryptInit = w_DecryptInit;
    table.C_Decrypt = w_C_Decrypt;
    table.C_DecryptUpdate = w_C_DecryptUpdate;
    table.C_DecryptFinal = w_DecryptFinal;
    table.C_SignInit = w_SignInit;
    table.C_Sign = w_C_Sign;
    table.C_VerifyInit = w_VerifyInit;
    table.C_Verify = w_Verify;
    table.C_GenerateKey = w_GenerateKey;
    table.C_GenerateKeyPair = w_GenerateKeyPair;
    table.C_WrapKey = w_WrapKey;
    table.C_UnwrapKey = w_UnwrapKey;
    table.C_SeedRandom = w_SeedRandom;
    table.C_GenerateRandom = w_GenerateRandom;
    real = list;
    return CKR_OK;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp) {
    CK_RV rv = load_target();
    if (rv != CKR_OK) return rv;
    return w_GetFunctionList(pp);
}
