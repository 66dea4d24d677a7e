/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of CURVE security (transport/curve.c, zap.c): key files are
 * written with the right modes and never overwritten; bad key and allow files
 * are refused with a reason; the ZAP handler follows RFC 27, answers malformed
 * requests with 500 and keeps serving; over tcp://127.0.0.1 an allowed
 * client talks to a CURVE server while an unknown key and a plain client
 * are refused (and the unknown key is logged once); the handler stops
 * without waiting for anything and leaves its context usable. Keys live
 * in a private mkdtemp directory removed at the end. Refusals are awaited
 * as monitor events; only the absence of messages is a bounded wait
 * (QUIET_MS); a call that must return is watched by an alarm.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "transport/curve.h"
#include "transport/zap.h"
#include "zpipe.h"

/* How long anything may take before a test calls it a hang. */
#define DEADLINE_MS 30000
/* How long a test waits to see that nothing arrives. */
#define QUIET_MS 500
/* Monitor events of a refused connection. Which one a server sees for a
 * mechanism mismatch depends on which side notices first. */
#define HANDSHAKE_FAILED                    \
    (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

/* The private directory of the keys; keys "a", "b" (clients), "s" (server),
 * and "allow-a", an allow file listing a's public key. */
static char dir[64];

/* ---- Helpers ------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* What the alarm of guard() watches. */
static const char *guarded;

static void on_alarm(int sig)
{
    static const char head[] = "curve_test: ", tail[] = " did not return\n";
    (void)sig;
    (void)!write(STDERR_FILENO, head, sizeof head - 1);
    (void)!write(STDERR_FILENO, guarded, strlen(guarded));
    (void)!write(STDERR_FILENO, tail, sizeof tail - 1);
    _exit(1);
}

/* Ends the program with a message when `what` (a call that waits for
 * nothing) has not returned within DEADLINE_MS: a hang fails with a name
 * well before ctest's timeout, and a slow machine fails nothing.
 * unguard() once it returned. */
static void guard(const char *what)
{
    guarded = what;
    signal(SIGALRM, on_alarm);
    alarm(DEADLINE_MS / 1000);
}

static void unguard(void)
{
    alarm(0);
}

/* The path of `name` in the private directory (a static buffer of 4). */
static const char *in_dir(const char *name)
{
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

static void write_file(const char *name, const char *text, mode_t mode)
{
    const char *path = in_dir(name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

/* The whole file, malloc'ed, or NULL when missing. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *text = calloc(1, 1 << 16);
    assert_non_null(text);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

static void read_pub(const char *name, char key[41])
{
    char *why = NULL;
    char file[64];
    snprintf(file, sizeof file, "%s.pub", name);
    assert_int_equal(zp__curve_read_key(in_dir(file), false, key, &why), 0);
    assert_null(why);
}

/* Expects read_key to refuse `name` with a reason containing `part`. */
static void expect_refused(const char *name, bool secret, const char *part)
{
    char key[41] = "unchanged";
    char *why = NULL;
    int rc = zp__curve_read_key(in_dir(name), secret, key, &why);
    if (rc != ZP_EINVAL || why == NULL || strstr(why, part) == NULL ||
        strstr(why, name) == NULL)
        fail_msg("%s: rc %d, why '%s', expected '%s'", name, rc,
                 why ? why : "(null)", part);
    assert_int_equal(key[0], '\0'); /* never half a key */
    free(why);
}

static int remove_all(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            remove(in_dir(e->d_name));
    closedir(d);
    return rmdir(dir);
}

static int setup(void **state)
{
    char a[41], *why = NULL;
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/zp-curve-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    if (zp__curve_keygen(in_dir("a"), &why) != 0 ||
        zp__curve_keygen(in_dir("b"), &why) != 0 ||
        zp__curve_keygen(in_dir("s"), &why) != 0 ||
        zp__curve_read_key(in_dir("a.pub"), false, a, &why) != 0) {
        fprintf(stderr, "setup: %s\n", why);
        free(why);
        return -1;
    }
    char text[128];
    snprintf(text, sizeof text, "# allowed workers\n\n  %s  \n", a);
    write_file("allow-a", text, 0644);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return remove_all();
}

/* ---- stderr capture ------------------------------------------------------ */

/* The real stderr while it is captured, else -1. */
static int saved_stderr = -1;

static void capture_start(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(in_dir("stderr"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved_stderr >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr; returns what was written meanwhile (malloc'ed). */
static char *capture_stop(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    char *text = slurp(in_dir("stderr"));
    unlink(in_dir("stderr"));
    assert_non_null(text);
    return text;
}

/* Teardown of tests that capture: a test that failed while capturing gets
 * its stderr back, and what cmocka wrote there is shown. */
static int restore_stderr(void **state)
{
    (void)state;
    if (saved_stderr >= 0) {
        char *text = capture_stop();
        fputs(text, stderr);
        free(text);
    }
    return 0;
}

static int count(const char *text, const char *part)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, part)) != NULL; p++)
        n++;
    return n;
}

/* ---- Sockets ------------------------------------------------------------- */

/* A CURVE ROUTER with a ZAP handler allowing `allow`, on 127.0.0.1. */
typedef struct server {
    void *zctx;   /* the server's context              */
    void *cctx;   /* the clients' context              */
    zp__zap *zap; /* NULL when made without one        */
    void *router; /* bound at endpoint                 */
    char endpoint[128];
} server;

static void server_start(server *s, const char *allow)
{
    char *why = NULL;
    int zero = 0;
    size_t n = sizeof s->endpoint;
    memset(s, 0, sizeof *s);
    s->zctx = zmq_ctx_new();
    s->cctx = zmq_ctx_new();
    if (allow != NULL) {
        s->zap = zp__zap_new(s->zctx, in_dir(allow), &why);
        if (s->zap == NULL)
            fail_msg("zap: %s", why);
    }
    s->router = zmq_socket(s->zctx, ZMQ_ROUTER);
    zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zp__curve_server(s->router, in_dir("s.key"), &why), 0);
    assert_int_equal(zmq_bind(s->router, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(s->router, ZMQ_LAST_ENDPOINT, s->endpoint, &n);
}

static void server_stop(server *s)
{
    zmq_close(s->router);
    zp__zap_destroy(&s->zap);
    zmq_ctx_term(s->zctx);
    zmq_ctx_term(s->cctx);
}

/* A DEALER connected to the server: CURVE with key `name`, or plain. */
static void *client_new(server *s, const char *name)
{
    char *why = NULL, secret[64];
    int zero = 0;
    void *d = zmq_socket(s->cctx, ZMQ_DEALER);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    snprintf(secret, sizeof secret, "%s.key", name ? name : "");
    if (name != NULL)
        assert_int_equal(
            zp__curve_client(d, in_dir("s.pub"), in_dir(secret), &why), 0);
    assert_int_equal(zmq_connect(d, s->endpoint), 0);
    return d;
}

/* A PAIR receiving `events` of `sock`. */
static void *monitor(void *zctx, void *sock, const char *name, int events)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://%s", name);
    assert_int_equal(zmq_socket_monitor(sock, ep, events), 0);
    void *m = zmq_socket(zctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(m, ep), 0);
    return m;
}

/* Waits for `n` events on a monitor; returns how many came in time. */
static int await_events(void *mon, int n)
{
    int got = 0;
    double end = now_ms() + DEADLINE_MS;
    while (got < n && now_ms() < end) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(end - now_ms()) + 1) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, mon, 0) >= 0 && zmq_msg_more(&m))
            ;
        zmq_msg_close(&m);
        got++;
    }
    return got;
}

static void monitor_close(void *sock, void *mon)
{
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(mon);
}

/* Whether `sock` has a message within `ms`. */
static bool readable_within(void *sock, int ms)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) > 0;
}

/* Receives one frame into `m` (initialised) within DEADLINE_MS. */
static void recv_soon(void *sock, zmq_msg_t *m)
{
    if (!readable_within(sock, DEADLINE_MS))
        fail_msg("no message within %d ms", DEADLINE_MS);
    assert_true(zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0);
}

/* ---- Key generation ------------------------------------------------------ */

static void
test_keygen_writes_a_private_secret_key_and_a_public_key(void **state)
{
    struct stat st;
    char sec[41], pub[41], derived[41], *why = NULL;
    (void)state;
    assert_int_equal(zp__curve_keygen(in_dir("k"), &why), 0);
    assert_int_equal(stat(in_dir("k.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(in_dir("k.pub"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    char *text = slurp(in_dir("k.key"));
    assert_non_null(text);
    assert_true(strncmp(text, "# zpipe CURVE secret key\n", 25) == 0);
    assert_int_equal(strlen(text), 25 + 40 + 1);
    free(text);
    text = slurp(in_dir("k.pub"));
    assert_true(strncmp(text, "# zpipe CURVE public key\n", 25) == 0);
    free(text);
    assert_int_equal(zp__curve_read_key(in_dir("k.key"), true, sec, &why), 0);
    assert_int_equal(zp__curve_read_key(in_dir("k.pub"), false, pub, &why), 0);
    assert_int_equal(zmq_curve_public(derived, sec), 0);
    assert_string_equal(derived, pub);
    assert_null(why);
}

static void test_keygen_refuses_to_overwrite_either_key(void **state)
{
    char *why = NULL;
    (void)state;
    assert_int_equal(zp__curve_keygen(in_dir("o"), &why), 0);
    char *before = slurp(in_dir("o.key"));
    assert_int_equal(zp__curve_keygen(in_dir("o"), &why), ZP_EINVAL);
    assert_non_null(strstr(why, "o.key"));
    assert_non_null(strstr(why, "refusing to overwrite"));
    free(why);
    why = NULL;
    char *after = slurp(in_dir("o.key"));
    assert_string_equal(before, after);
    free(after);
    /* A lone public key is not overwritten either, and no secret key is
     * left behind without its public key. */
    unlink(in_dir("o.key"));
    assert_int_equal(zp__curve_keygen(in_dir("o"), &why), ZP_EINVAL);
    assert_non_null(strstr(why, "o.pub"));
    assert_int_equal(access(in_dir("o.key"), F_OK), -1);
    free(why);
    free(before);
}

static void
test_keygen_refuses_an_empty_name_and_a_missing_directory(void **state)
{
    char *why = NULL;
    (void)state;
    assert_int_equal(zp__curve_keygen("", &why), ZP_EINVAL);
    assert_non_null(why);
    free(why);
    why = NULL;
    assert_int_equal(zp__curve_keygen(NULL, NULL), ZP_EINVAL);
    /* A folder that does not exist is the caller's mistake. */
    assert_int_equal(zp__curve_keygen(in_dir("no/such/dir/k"), &why),
                     ZP_EINVAL);
    assert_non_null(strstr(why, "no/such/dir/k.key"));
    assert_non_null(strstr(why, "there is no folder '"));
    assert_non_null(strstr(why, "/no/such/dir'"));
    free(why);
}

/* ---- Reading keys -------------------------------------------------------- */

static void
test_read_key_accepts_comments_and_surrounding_whitespace(void **state)
{
    char a[41], key[41], text[256], *why = NULL;
    (void)state;
    read_pub("a", a);
    snprintf(text, sizeof text, "# one\n#two\n\n \t%s \r\n\n", a);
    write_file("spaced.pub", text, 0644);
    assert_int_equal(zp__curve_read_key(in_dir("spaced.pub"), false, key, &why),
                     0);
    assert_string_equal(key, a);
    write_file("bare.key", a, 0600); /* no newline; 0600 also fine */
    assert_int_equal(zp__curve_read_key(in_dir("bare.key"), true, key, &why),
                     0);
    assert_string_equal(key, a);
    write_file("bare.key", a, 0400);
    assert_int_equal(zp__curve_read_key(in_dir("bare.key"), true, key, &why),
                     0);
    assert_null(why);
}

static void test_read_key_refuses_a_key_of_the_wrong_length(void **state)
{
    char a[41], text[256];
    (void)state;
    read_pub("a", a);
    snprintf(text, sizeof text, "%.39s\n", a);
    write_file("short.pub", text, 0644);
    expect_refused("short.pub", false, "short.pub:1: expected a Z85 key of 40");
    snprintf(text, sizeof text, "# c\n%s0\n", a);
    write_file("long.pub", text, 0644);
    expect_refused("long.pub", false, "long.pub:2: expected a Z85 key of 40");
    snprintf(text, sizeof text, "%.20s %.20s\n", a, a + 20);
    write_file("split.pub", text, 0644);
    expect_refused("split.pub", false, "found a line of 41");
}

static void test_read_key_refuses_characters_outside_z85(void **state)
{
    char a[41];
    (void)state;
    read_pub("a", a);
    a[17] = '~';
    write_file("tilde.pub", a, 0644);
    expect_refused("tilde.pub", false, "not a Z85 key");
    a[17] = '"';
    write_file("quote.pub", a, 0644);
    expect_refused("quote.pub", false, "not a Z85 key");
    /* Z85 digits, but a block above 2^32. */
    write_file("big.pub", "%%%%%aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0644);
    expect_refused("big.pub", false, "not a Z85 key");
}

static void test_read_key_refuses_missing_empty_and_odd_files(void **state)
{
    char a[41], b[41], text[256];
    (void)state;
    read_pub("a", a);
    read_pub("b", b);
    expect_refused("missing.pub", false, "No such file");
    write_file("empty.pub", "", 0644);
    expect_refused("empty.pub", false, "holds no key");
    write_file("comment.pub", "# only a comment\n\n", 0644);
    expect_refused("comment.pub", false, "holds no key");
    snprintf(text, sizeof text, "%s\n%s\n", a, b);
    write_file("two.pub", text, 0644);
    expect_refused("two.pub", false, "two.pub:2: nothing may follow");
    snprintf(text, sizeof text, "%s\n# trailing\n", a);
    write_file("after.pub", text, 0644);
    expect_refused("after.pub", false, "after.pub:2: nothing may follow");
    char *big = malloc(8192);
    memset(big, '\n', 8191);
    big[8191] = '\0';
    write_file("big-file.pub", big, 0644);
    free(big);
    expect_refused("big-file.pub", false, "too large");
    assert_int_equal(mkdir(in_dir("dir.pub"), 0700), 0);
    expect_refused("dir.pub", false, "not a regular file");
    int fd = open(in_dir("nul.pub"), O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, a, 20), 20);
    assert_int_equal(write(fd, "\0", 1), 1);
    assert_int_equal(write(fd, a + 20, 20), 20);
    close(fd);
    expect_refused("nul.pub", false, "binary data");
}

static void
test_read_key_refuses_a_secret_key_open_to_group_or_others(void **state)
{
    char a[41], key[41], *why = NULL;
    (void)state;
    read_pub("a", a);
    write_file("open.key", a, 0644);
    expect_refused("open.key", true, "mode 644");
    expect_refused("open.key", true, "chmod 600");
    write_file("group.key", a, 0640);
    expect_refused("group.key", true, "accessible to group or others");
    write_file("other.key", a, 0602);
    expect_refused("other.key", true, "mode 602");
    /* The same file is a fine public key. */
    assert_int_equal(zp__curve_read_key(in_dir("open.key"), false, key, &why),
                     0);
    assert_string_equal(key, a);
}

static void test_read_key_tells_a_secret_key_from_a_public_one(void **state)
{
    char key[41], *why = NULL;
    (void)state;
    /* The server's secret key where its public key is wanted, as in
     * `zpipe worker --curve-server server.key`, and the reverse. */
    expect_refused("s.key", false,
                   "s.key is a secret key (its line '# zpipe CURVE secret "
                   "key' says so), where a public key is wanted");
    expect_refused("s.pub", true,
                   "s.pub is a public key (its line '# zpipe CURVE public "
                   "key' says so), where a secret key is wanted");
    assert_int_equal(zp__curve_read_key(in_dir("s.key"), true, key, &why), 0);
    assert_int_equal(zp__curve_read_key(in_dir("s.pub"), false, key, &why), 0);
    /* Without keygen's mark, a key is taken for what the caller wants. */
    char *text = slurp(in_dir("s.key"));
    assert_non_null(text);
    write_file("unmarked", strchr(text, '\n') + 1, 0600);
    assert_int_equal(zp__curve_read_key(in_dir("unmarked"), false, key, &why),
                     0);
    free(text);
    assert_null(why);
}

static void test_curve_sockets_refuse_bad_key_files(void **state)
{
    void *zctx = zmq_ctx_new();
    void *s = zmq_socket(zctx, ZMQ_ROUTER);
    char *why = NULL;
    (void)state;
    assert_int_equal(zp__curve_server(s, in_dir("missing.key"), &why),
                     ZP_EINVAL);
    assert_non_null(strstr(why, "missing.key"));
    free(why);
    why = NULL;
    /* a.pub, as a secret key, is refused for what it is. */
    assert_int_equal(zp__curve_server(s, in_dir("a.pub"), &why), ZP_EINVAL);
    assert_non_null(strstr(why, "a.pub is a public key"));
    free(why);
    why = NULL;
    assert_int_equal(zp__curve_client(s, in_dir("s.pub"), NULL, &why),
                     ZP_EINVAL);
    assert_non_null(strstr(why, "no secret key file"));
    free(why);
    why = NULL;
    assert_int_equal(
        zp__curve_client(s, in_dir("missing.pub"), in_dir("a.key"), &why),
        ZP_EINVAL);
    assert_non_null(strstr(why, "missing.pub"));
    free(why);
    int is_server = 1;
    size_t n = sizeof is_server;
    zmq_getsockopt(s, ZMQ_CURVE_SERVER, &is_server, &n);
    assert_int_equal(is_server, 0);
    zmq_close(s);
    zmq_ctx_term(zctx);
}

/* ---- The ZAP handler, asked directly ------------------------------------- */

/* Sends a request of n frames (NULL-terminated strings, or one binary key
 * when a frame is "KEY:x" for x's public key) and receives the reply. */
typedef struct reply {
    char f[8][64];
    int n;
} reply;

static void ask(void *req, const void *const *frames, const size_t *lens, int n,
                reply *r)
{
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(req, frames[i], lens[i],
                             i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
    memset(r, 0, sizeof *r);
    int more = 1;
    size_t len = sizeof more;
    while (more) {
        assert_true(readable_within(req, DEADLINE_MS));
        int got = zmq_recv(req, r->f[r->n < 8 ? r->n : 7], 63, 0);
        assert_true(got >= 0 && got < 64);
        r->n++;
        zmq_getsockopt(req, ZMQ_RCVMORE, &more, &len);
    }
}

/* A well-formed request with `mech` and up to two credentials. */
static void ask_mech(void *req, const char *id, const char *mech,
                     const void *cred, size_t cred_len, reply *r)
{
    const void *f[] = {"1.0", id, "", "10.1.2.3", "", mech, cred};
    size_t l[] = {3, strlen(id), 0, 8, 0, strlen(mech), cred_len};
    ask(req, f, l, cred != NULL ? 7 : 6, r);
}

static void expect_reply(const reply *r, const char *id, const char *status,
                         const char *user)
{
    assert_int_equal(r->n, 6);
    assert_string_equal(r->f[0], "1.0");
    assert_string_equal(r->f[1], id);
    assert_string_equal(r->f[2], status);
    assert_true(strlen(r->f[3]) > 0);
    assert_string_equal(r->f[4], user);
    assert_string_equal(r->f[5], "");
}

static void *zap_client(void *zctx)
{
    void *req = zmq_socket(zctx, ZMQ_REQ);
    int zero = 0;
    zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(req, "inproc://zeromq.zap.01"), 0);
    return req;
}

static void test_the_zap_handler_follows_rfc_27(void **state)
{
    char a[41], b[41], *why = NULL;
    uint8_t ka[32], kb[32];
    reply r;
    (void)state;
    read_pub("a", a);
    read_pub("b", b);
    zmq_z85_decode(ka, a);
    zmq_z85_decode(kb, b);
    void *zctx = zmq_ctx_new();
    zp__zap *zap = zp__zap_new(zctx, in_dir("allow-a"), &why);
    assert_non_null(zap);
    void *req = zap_client(zctx);
    capture_start();
    ask_mech(req, "id-1", "CURVE", ka, 32, &r);
    reply r2, r3, r4, r5;
    ask_mech(req, "id-2", "CURVE", kb, 32, &r2);
    ask_mech(req, "id-3", "CURVE", kb, 32, &r3);
    ask_mech(req, "id-4", "NULL", NULL, 0, &r4);
    ask_mech(req, "id-5", "NULL", NULL, 0, &r5);
    char *log = capture_stop();
    expect_reply(&r, "id-1", "200", a);
    expect_reply(&r2, "id-2", "400", "");
    expect_reply(&r3, "id-3", "400", "");
    expect_reply(&r4, "id-4", "400", "");
    expect_reply(&r5, "id-5", "400", "");
    char line[128];
    snprintf(line, sizeof line,
             "zpipe: refused a CURVE client with key %.8s... from 10.1.2.3\n",
             b);
    assert_int_equal(count(log, line), 1);
    assert_int_equal(count(log, "refused a NULL client from 10.1.2.3"), 1);
    assert_int_equal(count(log, a), 0);
    free(log);
    zmq_close(req);
    zp__zap_destroy(&zap);
    assert_null(zap);
    zmq_ctx_term(zctx);
}

static void
test_the_zap_handler_answers_malformed_requests_with_500(void **state)
{
    char a[41], *why = NULL;
    uint8_t ka[32];
    reply r;
    (void)state;
    read_pub("a", a);
    zmq_z85_decode(ka, a);
    void *zctx = zmq_ctx_new();
    zp__zap *zap = zp__zap_new(zctx, in_dir("allow-a"), &why);
    assert_non_null(zap);
    void *req = zap_client(zctx);
    capture_start();
    const void *one[] = {"garbage"};
    size_t one_len[] = {7};
    ask(req, one, one_len, 1, &r);
    expect_reply(&r, "", "500", "");
    const void *v2[] = {"2.0", "id", "", "addr", "", "CURVE", ka};
    size_t v2_len[] = {3, 2, 0, 4, 0, 5, 32};
    ask(req, v2, v2_len, 7, &r);
    expect_reply(&r, "id", "500", "");
    ask_mech(req, "short", "CURVE", ka, 31, &r);
    expect_reply(&r, "short", "500", "");
    ask_mech(req, "none", "CURVE", NULL, 0, &r);
    expect_reply(&r, "none", "500", "");
    const void *many[12];
    size_t many_len[12];
    for (int i = 0; i < 12; i++) {
        many[i] = i == 0 ? "1.0" : i == 5 ? "NULL" : (const void *)ka;
        many_len[i] = i == 0 ? 3 : i == 5 ? 4 : 32;
    }
    ask(req, many, many_len, 12, &r);
    assert_string_equal(r.f[2], "500");
    many[5] = "CURVE"; /* two credentials */
    many_len[5] = 5;
    ask(req, many, many_len, 8, &r);
    assert_string_equal(r.f[2], "500");
    /* Still serving. */
    ask_mech(req, "good", "CURVE", ka, 32, &r);
    expect_reply(&r, "good", "200", a);
    free(capture_stop());
    zmq_close(req);
    zp__zap_destroy(&zap);
    zmq_ctx_term(zctx);
}

static void test_zap_new_refuses_bad_allow_files(void **state)
{
    char a[41], text[256], *why = NULL;
    void *zctx = zmq_ctx_new();
    (void)state;
    read_pub("a", a);
    assert_null(zp__zap_new(zctx, NULL, &why));
    assert_non_null(strstr(why, "no CURVE allow file"));
    free(why);
    assert_null(zp__zap_new(zctx, in_dir("missing-allow"), &why));
    assert_non_null(strstr(why, "missing-allow"));
    free(why);
    snprintf(text, sizeof text, "# ok\n%s\n\nnot a key\n", a);
    write_file("bad-allow", text, 0644);
    assert_null(zp__zap_new(zctx, in_dir("bad-allow"), &why));
    assert_non_null(strstr(why, "bad-allow:4:"));
    free(why);
    /* A secret key after its mark (`cat *.key` for `cat *.pub`) is refused,
     * though the public key of the same pair is welcome. */
    char *pub = slurp(in_dir("b.pub")), *sec = slurp(in_dir("b.key"));
    snprintf(text, sizeof text, "%s%s%s", pub, sec, pub);
    write_file("secret-allow", text, 0644);
    assert_null(zp__zap_new(zctx, in_dir("secret-allow"), &why));
    assert_non_null(strstr(why, "secret-allow:4: a secret key"));
    free(why);
    free(pub);
    free(sec);
    write_file("empty-allow", "# nobody\n", 0644);
    assert_null(zp__zap_new(zctx, in_dir("empty-allow"), &why));
    assert_non_null(strstr(why, "lists no public keys"));
    free(why);
    /* One handler per context. */
    zp__zap *zap = zp__zap_new(zctx, in_dir("allow-a"), &why);
    assert_non_null(zap);
    assert_null(zp__zap_new(zctx, in_dir("allow-a"), &why));
    assert_non_null(strstr(why, "already bound"));
    free(why);
    zp__zap_destroy(&zap);
    zmq_ctx_term(zctx);
}

/* ---- CURVE over TCP ------------------------------------------------------ */

static void
test_an_allowed_client_exchanges_messages_with_a_curve_server(void **state)
{
    server s;
    char a[41];
    zmq_msg_t id, body;
    (void)state;
    read_pub("a", a);
    server_start(&s, "allow-a");
    double t0 = now_ms();
    void *d = client_new(&s, "a");
    assert_int_equal(zmq_send(d, "hello", 5, 0), 5);
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    recv_soon(s.router, &id);
    recv_soon(s.router, &body);
    print_message("connect + CURVE handshake + ZAP + first message: %.1f ms\n",
                  now_ms() - t0);
    assert_int_equal(zmq_msg_size(&body), 5);
    assert_memory_equal(zmq_msg_data(&body), "hello", 5);
    const char *user = zmq_msg_gets(&body, "User-Id");
    assert_non_null(user);
    assert_string_equal(user, a);
    assert_true(zmq_msg_send(&id, s.router, ZMQ_SNDMORE) >= 0);
    assert_int_equal(zmq_send(s.router, "welcome", 7, 0), 7);
    recv_soon(d, &body);
    assert_memory_equal(zmq_msg_data(&body), "welcome", 7);
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    zmq_close(d);
    server_stop(&s);
}

static void
test_a_client_with_an_unknown_key_is_refused_and_logged_once(void **state)
{
    server s;
    char b[41], line[128];
    (void)state;
    read_pub("b", b);
    server_start(&s, "allow-a");
    void *mon =
        monitor(s.zctx, s.router, "mon-b", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    capture_start();
    /* Two connections with the same key: two refusals, one log line. */
    void *d = client_new(&s, "b");
    void *d2 = client_new(&s, "b");
    zmq_send(d, "hello", 5, 0);
    zmq_send(d2, "hello", 5, 0);
    int refusals = await_events(mon, 2);
    bool server_got = readable_within(s.router, QUIET_MS);
    bool client_got = readable_within(d, 0) || readable_within(d2, 0);
    char *log = capture_stop();
    assert_int_equal(refusals, 2);
    assert_false(server_got);
    assert_false(client_got);
    snprintf(line, sizeof line,
             "zpipe: refused a CURVE client with key %.8s... from 127.0.0.1\n",
             b);
    assert_int_equal(count(log, line), 1);
    free(log);
    monitor_close(s.router, mon);
    zmq_close(d);
    zmq_close(d2);
    server_stop(&s);
}

static void test_a_plain_client_is_refused(void **state)
{
    server s;
    (void)state;
    server_start(&s, "allow-a");
    void *mon = monitor(s.zctx, s.router, "mon-plain", HANDSHAKE_FAILED);
    void *d = client_new(&s, NULL);
    zmq_send(d, "hello", 5, 0);
    assert_int_equal(await_events(mon, 1), 1);
    assert_false(readable_within(s.router, QUIET_MS));
    assert_false(readable_within(d, 0));
    monitor_close(s.router, mon);
    zmq_close(d);
    server_stop(&s);
}

static void
test_a_curve_server_without_a_zap_handler_refuses_clients(void **state)
{
    server s;
    int v = 0;
    size_t n = sizeof v;
    (void)state;
    server_start(&s, NULL);
    /* ZMQ_ZAP_ENFORCE_DOMAIN (93) is a draft option of libzmq. */
    if (zmq_getsockopt(s.router, 93, &v, &n) != 0) {
        server_stop(&s);
        skip();
    }
    assert_int_equal(v, 1);
    void *mon = monitor(s.zctx, s.router, "mon-nozap", HANDSHAKE_FAILED);
    void *d = client_new(&s, "a");
    zmq_send(d, "hello", 5, 0);
    assert_int_equal(await_events(mon, 1), 1);
    assert_false(readable_within(s.router, QUIET_MS));
    monitor_close(s.router, mon);
    zmq_close(d);
    server_stop(&s);
}

/* ---- Stopping ------------------------------------------------------------ */

static void
test_destroy_is_prompt_null_safe_and_leaves_the_context_usable(void **state)
{
    char *why = NULL;
    zp__zap *none = NULL;
    (void)state;
    zp__zap_destroy(NULL);
    zp__zap_destroy(&none);
    void *zctx = zmq_ctx_new();
    for (int i = 0; i < 20; i++) {
        zp__zap *zap = zp__zap_new(zctx, in_dir("allow-a"), &why);
        if (zap == NULL)
            fail_msg("round %d: %s", i, why);
        guard("zp__zap_destroy");
        zp__zap_destroy(&zap);
        unguard();
        assert_null(zap);
        zp__zap_destroy(&zap);
    }
    /* The endpoint is free and the context works. */
    void *rep = zmq_socket(zctx, ZMQ_REP);
    assert_int_equal(zmq_bind(rep, "inproc://zeromq.zap.01"), 0);
    zmq_close(rep);
    zmq_ctx_term(zctx);
}

static void test_destroy_after_the_context_shut_down_is_prompt(void **state)
{
    char *why = NULL;
    (void)state;
    void *zctx = zmq_ctx_new();
    zp__zap *zap = zp__zap_new(zctx, in_dir("allow-a"), &why);
    assert_non_null(zap);
    zmq_ctx_shutdown(zctx);
    guard("zp__zap_destroy after zmq_ctx_shutdown");
    zp__zap_destroy(&zap);
    unguard();
    guard("zmq_ctx_term"); /* it hangs if the handler left a socket open */
    zmq_ctx_term(zctx);
    unguard();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_keygen_writes_a_private_secret_key_and_a_public_key),
        cmocka_unit_test(test_keygen_refuses_to_overwrite_either_key),
        cmocka_unit_test(
            test_keygen_refuses_an_empty_name_and_a_missing_directory),
        cmocka_unit_test(
            test_read_key_accepts_comments_and_surrounding_whitespace),
        cmocka_unit_test(test_read_key_refuses_a_key_of_the_wrong_length),
        cmocka_unit_test(test_read_key_refuses_characters_outside_z85),
        cmocka_unit_test(test_read_key_refuses_missing_empty_and_odd_files),
        cmocka_unit_test(
            test_read_key_refuses_a_secret_key_open_to_group_or_others),
        cmocka_unit_test(test_read_key_tells_a_secret_key_from_a_public_one),
        cmocka_unit_test(test_curve_sockets_refuse_bad_key_files),
        cmocka_unit_test_teardown(test_the_zap_handler_follows_rfc_27,
                                  restore_stderr),
        cmocka_unit_test_teardown(
            test_the_zap_handler_answers_malformed_requests_with_500,
            restore_stderr),
        cmocka_unit_test(test_zap_new_refuses_bad_allow_files),
        cmocka_unit_test(
            test_an_allowed_client_exchanges_messages_with_a_curve_server),
        cmocka_unit_test_teardown(
            test_a_client_with_an_unknown_key_is_refused_and_logged_once,
            restore_stderr),
        cmocka_unit_test(test_a_plain_client_is_refused),
        cmocka_unit_test(
            test_a_curve_server_without_a_zap_handler_refuses_clients),
        cmocka_unit_test(
            test_destroy_is_prompt_null_safe_and_leaves_the_context_usable),
        cmocka_unit_test(test_destroy_after_the_context_shut_down_is_prompt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
