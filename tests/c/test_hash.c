/* test_hash.c — SHA-256 against the FIPS 180 vectors (empty, "abc", the 448-bit message, a
 * million 'a'), streaming in every split against one-shot, the CPU-extension path against
 * plain C, a file against the system's sha256sum, file errors, and the speed of both paths. */
#include "check.h"
#include "tmpfiles.h"
#include "hash.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *hex_of(const void *p, size_t n)
{
    static char hex[KN_SHA256_HEX];
    uint8_t d[KN_SHA256_BYTES];
    kn_hash_sha256(p, n, d);
    kn_hash_hex(d, sizeof d, hex);
    return hex;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check_vectors(const char *path_name)
{
    CHECK(strcmp(hex_of("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
          "%s: empty string", path_name);
    CHECK(strcmp(hex_of("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
          "%s: \"abc\"", path_name);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(strcmp(hex_of(m448, strlen(m448)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
          "%s: the 448-bit message (padding spills into a second block)", path_name);
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    CHECK(strcmp(hex_of(million, 1000000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
          "%s: one million 'a'", path_name);
    /* The same million fed in uneven pieces. */
    kn_sha256 s;
    kn_hash_sha256_init(&s);
    for (size_t off = 0, step = 1; off < 1000000; off += step, step = step * 3 % 997 + 1)
        kn_hash_sha256_update(&s, million + off, off + step <= 1000000 ? step : 1000000 - off);
    uint8_t d[KN_SHA256_BYTES];
    char hex[KN_SHA256_HEX];
    kn_hash_sha256_final(&s, d);
    kn_hash_hex(d, sizeof d, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
          "%s: one million 'a' in uneven pieces", path_name);
    free(million);
}

/* Digests of prefixes of buf of every length 0..n, for comparing the two block functions. */
static void digests(const uint8_t *buf, size_t n, uint8_t (*out)[KN_SHA256_BYTES])
{
    for (size_t len = 0; len <= n; len++) kn_hash_sha256(buf, len, out[len]);
}

/* CPU time, not wall time: the machine may be shared with other jobs. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double mb_per_s(const uint8_t *buf, size_t n)
{
    uint8_t d[KN_SHA256_BYTES];
    double t0 = cpu_s();
    int reps = 0;
    do { kn_hash_sha256(buf, n, d); reps++; } while (cpu_s() - t0 < 0.3);
    return (double)n * reps / (cpu_s() - t0) / 1e6;
}

static void test_paths(void)
{
    bool accel = kn_hash_use_cpu_sha(true);
    NOTE("CPU SHA extensions %s", accel ? "in use" : "not available: plain C only");
    check_vectors(accel ? "SHA-NI" : "plain C");
    enum { N = 700 };
    uint8_t buf[N];
    for (int i = 0; i < N; i++) buf[i] = (uint8_t)(i * 131 + 7);
    static uint8_t a[N + 1][KN_SHA256_BYTES], b[N + 1][KN_SHA256_BYTES];
    digests(buf, N, a);
    uint8_t *big = malloc(64 << 20);
    for (size_t i = 0; i < (64u << 20); i++) big[i] = (uint8_t)(i ^ (i >> 9));
    double fast = mb_per_s(big, 64 << 20);
    CHECK(!kn_hash_use_cpu_sha(false), "the plain C path can be forced");
    check_vectors("plain C");
    digests(buf, N, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "both paths agree on all %d prefix lengths 0..%d", N + 1, N);
    double slow = mb_per_s(big, 64 << 20);
    NOTE("sha256 of 64 MiB in memory, per CPU second: %.0f MB/s %s, %.0f MB/s plain C", fast, accel ? "SHA-NI" : "(plain C)", slow);
    kn_hash_use_cpu_sha(true);
    free(big);
}

static void test_file(void)
{
    const char *p = in_dir("data.bin");
    size_t n = 3 * 1024 * 1024 + 123;   /* several read chunks and a partial block */
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)((i * 2654435761u) >> 13);
    write_file(p, buf, n);
    uint8_t d[KN_SHA256_BYTES], m[KN_SHA256_BYTES];
    uint64_t bytes = 0;
    CHECK_OK(kn_hash_sha256_file(p, d, &bytes), "hash a 3 MiB file");
    kn_hash_sha256(buf, n, m);
    CHECK(bytes == n && memcmp(d, m, sizeof d) == 0, "  ... its size, and the digest of the same bytes in memory");
    char hex[KN_SHA256_HEX], cmd[400], line[200] = "";
    kn_hash_hex(d, sizeof d, hex);
    snprintf(cmd, sizeof cmd, "sha256sum '%s' 2>/dev/null", p);
    FILE *f = popen(cmd, "r");
    bool got = f && fgets(line, sizeof line, f) != NULL;
    if (f) pclose(f);
    if (got) CHECK(strncmp(line, hex, 64) == 0 && line[64] == ' ', "  ... equal to sha256sum's %.16s...", line);
    else NOTE("sha256sum not available: compared with the in-memory digest only");

    write_file(p, "", 0);
    CHECK_OK(kn_hash_sha256_file(p, d, NULL), "hash an empty file");
    kn_hash_hex(d, sizeof d, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0, "  ... the empty digest");
    unlink(p);
    CHECK_FAILS(kn_hash_sha256_file(p, d, NULL), "No such file", "a missing file");
    CHECK(strstr(kn_errmsg(), p) != NULL, "  ... named: %s", kn_errmsg());
    const char *fifo = in_dir("fifo");
    mkfifo(fifo, 0600);
    double t0 = now_s();
    CHECK_FAILS(kn_hash_sha256_file(fifo, d, NULL), "is a FIFO (named pipe)", "a FIFO is refused");
    CHECK(now_s() - t0 < 2.0, "  ... without blocking");
    unlink(fifo);
    CHECK_FAILS(kn_hash_sha256_file(dir, d, NULL), "is a directory", "a directory is refused");
    free(buf);
}

int main(void)
{
    tmp_dir_make("hash");
    test_paths();
    test_file();
    CHECK(rmdir(dir) == 0, "temp directory removed (nothing left behind)");
    CHECK_DONE();
}
