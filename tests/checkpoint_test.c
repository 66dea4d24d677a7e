/* SPDX-License-Identifier: MIT */
/*
 * Tests of durable runs across every kind of stage: thread stages (several
 * workers, ordered), async stages, process and remote stages, nested
 * pipelines, with a checkpoint every millisecond, so that markers cross
 * each stage many times while it works. Each run records its outputs and,
 * at each on_checkpoint call, the token and how many outputs came before
 * it; the tests check that tokens are well formed and never go back, that
 * the outputs before a token are exactly those of the first stage's first
 * K items, that a run resumed from a token gives exactly what the first
 * run gave after it, that a finished token resumes to nothing, that
 * retries and skips count right, and that a branch of 200,000 outputs an
 * item goes through without anything held aside. Process and remote
 * workers are this program re-executed (tests/processutil.h).
 */
#include "tests/processutil.h"

#include <uv.h>

/* ---- Tasks -----------------------------------------------------------------
 * Outputs are 10 i + j for the first stage's item i, so that each tells
 * where it came from.
 */

/* The first task: 0 .. n-1 for [n], with a millisecond of work every
 * hundred items, so that checkpoints fall inside its stream. */
static int numbers_paced(zp_call *call)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++) {
        if (i % 100 == 99)
            nap_us(1000);
        if (zp_emit_int(call, i) != 0)
            return -1;
    }
    return 0;
}

/* The first task: 0 .. n-1 for [n], 2 ms of work before each but the
 * first, so that a checkpoint falls between any two. */
static int numbers_slow(zp_call *call)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++) {
        if (i > 0)
            nap_us(2000);
        if (zp_emit_int(call, i) != 0)
            return -1;
    }
    return 0;
}

ZP_TASK(tenfold)
{
    return zp_emit_int(call, 10 * item(call));
}

/* Items of the flaky tasks, at most. */
#define FLAKY_MAX 2000

/* The items a flaky task failed once in this process; cleared before a
 * run (worker processes start with it clear). */
static atomic_bool failed_once[FLAKY_MAX];

/* 10 x, failing once on multiples of 5 (the retry succeeds) and always on
 * multiples of 7 (skipped, after the retry); NULL, or why it fails. */
static const char *flaky(int64_t x)
{
    if (x % 7 == 0)
        return "a multiple of 7";
    if (x % 5 == 0 && x < FLAKY_MAX && !atomic_exchange(&failed_once[x], true))
        return "failing once";
    return NULL;
}

ZP_TASK(flaky_tenfold)
{
    const char *why = flaky(item(call));
    return why ? zp_fail(call, "%s", why) : zp_emit_int(call, 10 * item(call));
}

/* flaky_tenfold, as an async task that ends its call at once. */
ZP_ASYNC_TASK(flaky_tenfold_async)
{
    const char *why = flaky(item(call));
    (void)loop;
    if (why != NULL)
        zp_fail(call, "%s", why);
    else if (zp_emit_int(call, 10 * item(call)) == 0)
        zp_done(call);
    else
        zp_fail(call, "cannot emit");
}

static void free_timer(uv_handle_t *h)
{
    free(h);
}

static void tenfold_now(uv_timer_t *t)
{
    zp_call *call = t->data;
    int rc = zp_emit_int(call, 10 * item(call));
    uv_close((uv_handle_t *)t, free_timer);
    if (rc == 0)
        zp_done(call);
    else
        zp_fail(call, "cannot emit");
}

/* tenfold on the loop's next turn: many calls in flight at once. */
ZP_ASYNC_TASK(tenfold_later)
{
    uv_timer_t *t = malloc(sizeof *t);
    assert_non_null(t);
    uv_timer_init(loop, t);
    t->data = call;
    uv_timer_start(t, tenfold_now, 0, 0);
}

/* A filter: drops the outputs of items i that are multiples of 3. */
static int no_thirds(zp_call *call)
{
    int64_t x = item(call);
    return (x / 10) % 3 == 0 ? 0 : zp_emit_int(call, x);
}

/* A branch: x, x + 1. */
static int pair(zp_call *call)
{
    int64_t x = item(call);
    return zp_emit_int(call, x) != 0 ? -1 : zp_emit_int(call, x + 1);
}

/* The first task of an inner pipeline, on [x]: 10 x, 10 x + 1. */
static int inner_pair(zp_call *call)
{
    int64_t x = zp_input(call)->via.array.ptr[0].via.i64;
    return zp_emit_int(call, 10 * x) != 0 ? -1 : zp_emit_int(call, 10 * x + 1);
}

/* Items per item of `spew`. */
#define SPEW 200000

/* A branch: SPEW outputs per item x, x * SPEW + j. */
static int spew(zp_call *call)
{
    int64_t x = item(call);
    for (int64_t j = 0; j < SPEW; j++)
        if (zp_emit_int(call, x * SPEW + j) != 0)
            return -1;
    return 0;
}

/* ---- Recording checkpoints -------------------------------------------------
 */

/* The tokens of a run, in turn. */
typedef struct ckpts {
    char **tok;  /* owned copies */
    size_t *at;  /* outputs returned before each */
    uint64_t *k; /* each one's K; UINT64_MAX for the finished token */
    size_t n, cap;
    collected *c;   /* borrowed: the run's outputs so far */
    size_t fail_at; /* the call (from 1) that returns nonzero; 0: none */
    bool fail_done; /* the finished token is not committed (a crash at
                       the end: join stages' spill files stay)        */
} ckpts;

static void ckpts_fini(ckpts *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->tok[i]);
    free(k->tok);
    free(k->at);
    free(k->k);
    memset(k, 0, sizeof *k);
}

/* K of a token "zpipe1.<16 hex>.<K>" or "....done" (UINT64_MAX); fails
 * the test when it is not one. */
static uint64_t token_k(const char *t)
{
    const char *p = "zpipe1.";
    size_t np = strlen(p);
    if (strncmp(t, p, np) != 0 || strlen(t) < np + 18 || t[np + 16] != '.')
        fail_msg("'%s' is not a token", t);
    for (size_t i = np; i < np + 16; i++)
        if (strchr("0123456789abcdef", t[i]) == NULL)
            fail_msg("'%s' has no fingerprint", t);
    const char *k = t + np + 17;
    if (strcmp(k, "done") == 0)
        return UINT64_MAX;
    char *end;
    if (*k < '0' || *k > '9')
        fail_msg("'%s' has no K", t);
    uint64_t v = strtoull(k, &end, 10);
    if (*end != '\0' && *end != '.') /* ".B-N" per join stage */
        fail_msg("'%s' ends badly", t);
    return v;
}

static int record(void *user, const char *token)
{
    ckpts *k = user;
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 64;
        k->tok = realloc(k->tok, k->cap * sizeof *k->tok);
        k->at = realloc(k->at, k->cap * sizeof *k->at);
        k->k = realloc(k->k, k->cap * sizeof *k->k);
        assert_non_null(k->tok);
        assert_non_null(k->at);
        assert_non_null(k->k);
    }
    k->tok[k->n] = strdup(token);
    k->at[k->n] = k->c->n;
    k->k[k->n] = token_k(token);
    k->n++;
    if (k->fail_done && k->k[k->n - 1] == UINT64_MAX)
        return 5;
    return k->n == k->fail_at ? 5 : 0;
}

/* Notes the run's ipc directory, if it has worker processes, from their
 * command lines: they served the first outputs, so only those look. */
static void note_early(collected *c, void *ctx)
{
    if (c->n <= 4)
        note_workers(c, ctx);
}

/* Where join stages keep their input: the test directory, in the tests
 * of join stages; else NULL. */
static const char *spill_dir;

/* Runs p on args to its end, with a checkpoint every millisecond, from
 * `resume` if not NULL; remote workers connect at `listen`, if not NULL.
 * Outputs go to c, tokens to k. */
static void run_ckpt(zp_pipeline *p, const char *args, const char *listen,
                     const char *resume, collected *c, ckpts *k)
{
    zp_run_opts ro = {.listen = listen,
                      .wait_workers_ms = DEADLINE_MS,
                      .on_checkpoint = record,
                      .checkpoint_user = k,
                      .checkpoint_ms = 1,
                      .resume = resume,
                      .checkpoint_dir = spill_dir};
    bool noted = false;
    k->c = c;
    collected_fini(c);
    collect_with(p, args, &ro, c, listen ? NULL : note_early, &noted);
}

/* (a) Tokens are well formed, K never goes back and starts at `from` at
 * least, stays within n items, and the last token says the run finished,
 * after every output. */
static void assert_tokens(const ckpts *k, const collected *c, uint64_t from,
                          uint64_t n)
{
    assert_true(k->n >= 1);
    for (size_t i = 0; i + 1 < k->n; i++) {
        if (k->k[i] < from || k->k[i] > n)
            fail_msg("token %zu says K = %llu, not in [%llu, %llu]", i,
                     (unsigned long long)k->k[i], (unsigned long long)from,
                     (unsigned long long)n);
        from = k->k[i];
        if (i > 0)
            assert_true(k->at[i] >= k->at[i - 1]);
    }
    assert_true(k->k[k->n - 1] == UINT64_MAX);
    assert_int_equal(k->at[k->n - 1], c->n);
}

/* ---- Outputs ---------------------------------------------------------------
 */

/* The outputs of the first stage's item i, into out; how many. */
typedef size_t (*want_fn)(int64_t i, int64_t out[4]);

/* 10 i, 10 i + 1, for i not a multiple of 3. */
static size_t want_pairs(int64_t i, int64_t out[4])
{
    if (i % 3 == 0)
        return 0;
    out[0] = 10 * i;
    out[1] = 10 * i + 1;
    return 2;
}

/* 10 i, but for multiples of 7 (skipped). */
static size_t want_unskipped(int64_t i, int64_t out[4])
{
    if (i % 7 == 0)
        return 0;
    out[0] = 10 * i;
    return 1;
}

static int by_value(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A copy of v[0..n), sorted unless `ordered`. */
static int64_t *copy_of(const int64_t *v, size_t n, bool ordered)
{
    int64_t *c = malloc((n ? n : 1) * sizeof *c);
    assert_non_null(c);
    memcpy(c, v, n * sizeof *c);
    if (!ordered)
        qsort(c, n, sizeof *c, by_value);
    return c;
}

/* Asserts got[0..n) and want[0..m) are the same sequence (ordered) or
 * the same multiset; `what` names them. */
static void assert_same(const int64_t *got, size_t n, const int64_t *want,
                        size_t m, bool ordered, const char *what)
{
    int64_t *a = copy_of(got, n, ordered), *b = copy_of(want, m, ordered);
    size_t i = 0;
    while (i < n && i < m && a[i] == b[i])
        i++;
    int64_t x = i < n ? a[i] : -1, y = i < m ? b[i] : -1;
    free(a);
    free(b);
    if (i < n || i < m)
        fail_msg("%s: %zu outputs for %zu expected; at %zu, %lld for %lld",
                 what, n, m, i, (long long)x, (long long)y);
}

/* Asserts v[0..n) are the outputs of items [from, to), as want says. */
static void assert_outputs_of(const int64_t *v, size_t n, want_fn want,
                              int64_t from, int64_t to, bool ordered,
                              const char *what)
{
    size_t m = 0;
    int64_t *all = malloc((size_t)(to - from + 1) * 4 * sizeof *all);
    assert_non_null(all);
    for (int64_t i = from; i < to; i++)
        m += want(i, all + m);
    assert_same(v, n, all, m, ordered, what);
    free(all);
}

/* A token taken mid-run: the middle one of those with 0 < K < n. */
static size_t mid_token(const ckpts *k, uint64_t n)
{
    size_t idx[4096], m = 0;
    for (size_t i = 0; i < k->n && m < 4096; i++)
        if (k->k[i] > 0 && k->k[i] < n)
            idx[m++] = i;
    if (m == 0)
        fail_msg("no checkpoint inside the first stage's stream (%zu tokens)",
                 k->n);
    return idx[m / 2];
}

/* ---- The check of one kind of stage ----------------------------------------
 */

/*
 * Runs p (a first stage of n items, then the stages under test) with
 * checkpoints and checks (a) its tokens, (b) its outputs, (c) a run
 * resumed from a token taken mid-run, (d) one resumed from the finished
 * token. `ordered`: outputs must come in order. Remote workers connect at
 * `listen`, when not NULL.
 */
static void check_resumes(fixture *f, zp_pipeline *p, int64_t n, want_fn want,
                          bool ordered, const char *listen)
{
    collected *c = &f->c;
    ckpts k = {0}, again = {0};
    char args[32];
    snprintf(args, sizeof args, "[%lld]", (long long)n);
    run_ckpt(p, args, listen, NULL, c, &k);
    assert_run_ok(c);
    assert_tokens(&k, c, 0, (uint64_t)n);
    assert_outputs_of(c->v, c->n, want, 0, n, ordered, "the whole run");
    print_message("%zu outputs, %zu checkpoints\n", c->n, k.n);
    size_t t = mid_token(&k, (uint64_t)n), at = k.at[t];
    int64_t *rest = copy_of(c->v + at, c->n - at, true), K = (int64_t)k.k[t];
    size_t nrest = c->n - at;
    assert_outputs_of(c->v, at, want, 0, K, ordered, "before the token");
    /* (c) the resumed run gives what came after the token */
    run_ckpt(p, args, listen, k.tok[t], c, &again);
    assert_run_ok(c);
    assert_tokens(&again, c, (uint64_t)K, (uint64_t)n);
    assert_same(c->v, c->n, rest, nrest, ordered, "the resumed run");
    free(rest);
    ckpts_fini(&again);
    /* (d) the finished token: no output, success */
    run_ckpt(p, args, listen, k.tok[k.n - 1], c, &again);
    assert_run_ok(c);
    assert_int_equal(c->n, 0);
    ckpts_fini(&again);
    ckpts_fini(&k);
    collected_fini(c);
}

/* numbers_paced | stage | no_thirds | pair, the last two with two
 * workers (ordered when `ordered`). */
static zp_pipeline *through(zp_pipeline *stage, bool ordered)
{
    return zp_pipe(
        zp_task(numbers_paced, .branch = true), stage,
        zp_task(no_thirds, .workers = 2, .ordered = ordered),
        zp_task(pair, .branch = true, .workers = 2, .ordered = ordered));
}

/* ---- Each kind -------------------------------------------------------------
 */

/* Checks `stage` as check_resumes() does, in through(). */
static void check_kind(void **state, zp_pipeline *stage, bool ordered)
{
    fixture *f = *state;
    f->p = through(stage, ordered);
    check_resumes(f, f->p, 3000, want_pairs, ordered, NULL);
}

static void test_a_thread_stage_passes_checkpoints_on(void **state)
{
    check_kind(state, zp_task(tenfold, .workers = 4), false);
}

static void
test_an_ordered_thread_stage_passes_checkpoints_in_order(void **state)
{
    check_kind(state, zp_task(tenfold, .workers = 4, .ordered = true), true);
}

static void test_an_async_stage_passes_checkpoints_on(void **state)
{
    check_kind(state, zp_async_task(tenfold_later, .workers = 64), false);
}

static void
test_an_ordered_async_stage_passes_checkpoints_in_order(void **state)
{
    check_kind(state,
               zp_async_task(tenfold_later, .workers = 64, .ordered = true),
               true);
}

static void test_a_process_stage_passes_checkpoints_on(void **state)
{
    check_kind(state, zp_task(tenfold, .workers = 3, .mode = ZP_PROCESS),
               false);
}

static void
test_an_ordered_process_stage_passes_checkpoints_in_order(void **state)
{
    check_kind(
        state,
        zp_task(tenfold, .workers = 3, .mode = ZP_PROCESS, .ordered = true),
        true);
}

static void test_a_remote_stage_passes_checkpoints_on(void **state)
{
    fixture *f = *state;
    char ep[64];
    free_endpoint(ep, sizeof ep);
    /* The same two workers serve each run in turn. */
    pid_t a = start_worker(ep, NULL, NULL), b = start_worker(ep, NULL, NULL);
    f->p = through(zp_task(tenfold, .mode = ZP_REMOTE), false);
    check_resumes(f, f->p, 3000, want_pairs, false, ep);
    stop_worker(a);
    stop_worker(b);
}

static void test_a_nested_pipeline_stage_passes_checkpoints_on(void **state)
{
    fixture *f = *state;
    zp_pipeline *inner = zp_pipe(zp_task(inner_pair, .branch = true));
    f->p = zp_pipe(zp_task(numbers_paced, .branch = true),
                   zp_task_pipeline(inner, .workers = 2, .branch = true),
                   zp_task(no_thirds, .workers = 2));
    check_resumes(f, f->p, 3000, want_pairs, false, NULL);
}

/* x -> 5 x. */
static int fivefold(zp_call *call)
{
    return zp_emit_int(call, 5 * item(call));
}

/* A worker that dies mid-batch (twice_dying_once: on items 750, 1500 and
 * 2250): its batches go back to waiting, and the marker waits for them. */
static void test_a_process_worker_dying_mid_batch_delays_a_marker(void **state)
{
    fixture *f = *state;
    test_dir_make();
    f->p = zp_pipe(zp_task(numbers_paced, .branch = true),
                   zp_task(twice_dying_once, .workers = 3, .mode = ZP_PROCESS),
                   zp_task(fivefold, .workers = 2), zp_task(no_thirds),
                   zp_task(pair, .branch = true));
    check_resumes(f, f->p, 3000, want_pairs, false, NULL);
    assert_int_equal(test_dir_count("died-on-"), 3);
}

/* ---- Retries and skips
 * -------------------------------------------------------
 */

/* Items of [from, n) that are multiples of m. */
static uint64_t multiples(int64_t from, int64_t n, int64_t m)
{
    uint64_t k = 0;
    for (int64_t i = from; i < n; i++)
        k += i % m == 0;
    return k;
}

/* Asserts the stage's counts for items [from, n) of flaky_tenfold with one
 * retry and on_error = ZP_SKIP. */
static void assert_flaky_counts(const zp_stage_stats *st, int64_t from,
                                int64_t n)
{
    uint64_t sevens = multiples(from, n, 7);
    uint64_t fives = multiples(from, n, 5) - multiples(from, n, 35);
    assert_int_equal(st->items_in, (uint64_t)(n - from));
    assert_int_equal(st->skipped, sevens);
    assert_int_equal(st->failed, sevens);
    assert_int_equal(st->retried, fives + sevens);
    assert_int_equal(st->items_out, (uint64_t)(n - from) - sevens);
}

/* numbers_paced | stage, its counts checked before and after a resume. */
static void check_flaky(fixture *f, zp_pipeline *stage)
{
    collected *c = &f->c;
    ckpts k = {0}, again = {0};
    f->p = zp_pipe(zp_task(numbers_paced, .branch = true), stage);
    memset(failed_once, 0, sizeof failed_once);
    run_ckpt(f->p, "[2000]", NULL, NULL, c, &k);
    assert_run_ok(c);
    assert_tokens(&k, c, 0, 2000);
    assert_outputs_of(c->v, c->n, want_unskipped, 0, 2000, false, "the run");
    assert_flaky_counts(&c->st, 0, 2000);
    size_t t = mid_token(&k, 2000);
    int64_t K = (int64_t)k.k[t];
    memset(failed_once, 0, sizeof failed_once);
    run_ckpt(f->p, "[2000]", NULL, k.tok[t], c, &again);
    assert_run_ok(c);
    assert_outputs_of(c->v, c->n, want_unskipped, K, 2000, false,
                      "the resumed run");
    assert_flaky_counts(&c->st, K, 2000);
    ckpts_fini(&again);
    ckpts_fini(&k);
    collected_fini(c);
}

static void test_retries_and_skips_count_right_across_markers(void **state)
{
    check_flaky(*state, zp_task(flaky_tenfold, .workers = 4, .retries = 1,
                                .on_error = ZP_SKIP));
}

static void
test_async_retries_and_skips_count_right_across_markers(void **state)
{
    check_flaky(*state, zp_async_task(flaky_tenfold_async, .workers = 16,
                                      .retries = 1, .on_error = ZP_SKIP));
}

static void
test_process_retries_and_skips_count_right_across_markers(void **state)
{
    check_flaky(*state, zp_task(flaky_tenfold, .workers = 3, .retries = 1,
                                .on_error = ZP_SKIP, .mode = ZP_PROCESS));
}

/* ---- Bounded memory --------------------------------------------------------
 */

/* A branch of SPEW outputs an item, through a thread stage and a process
 * stage: a marker after item K waits for all of item K-1's outputs to go
 * through, and nothing is held aside meanwhile (the run could not hold
 * them within its throttles). */
static void test_a_huge_branch_goes_through_checkpoints(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    ckpts k = {0};
    f->p = zp_pipe(zp_task(numbers_slow, .branch = true),
                   zp_task(spew, .branch = true, .workers = 2),
                   zp_task(tenfold, .workers = 3, .mode = ZP_PROCESS));
    run_ckpt(f->p, "[3]", NULL, NULL, c, &k);
    assert_run_ok(c);
    assert_int_equal(c->n, 3 * SPEW);
    assert_tokens(&k, c, 0, 3);
    mid_token(&k, 3); /* one at least, before the last item */
    for (size_t i = 0; i + 1 < k.n; i++)
        assert_int_equal(k.at[i], k.k[i] * SPEW);
    unsigned char *seen = calloc(3 * SPEW, 1);
    assert_non_null(seen);
    for (size_t i = 0; i < c->n; i++) {
        int64_t v = c->v[i] / 10;
        assert_true(c->v[i] % 10 == 0 && v >= 0 && v < 3 * SPEW);
        assert_int_equal(seen[v]++, 0);
    }
    free(seen);
    print_message("%zu outputs, a checkpoint at K = %llu after %zu\n", c->n,
                  (unsigned long long)k.k[0], k.at[0]);
    ckpts_fini(&k);
    collected_fini(c);
}

/* ---- Tokens refused, checkpoints not committed ------------------------------
 */

static void test_another_pipelines_token_fails_the_run(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    ckpts k = {0}, again = {0};
    f->p = through(zp_task(tenfold, .workers = 4), false);
    run_ckpt(f->p, "[300]", NULL, NULL, c, &k);
    assert_run_ok(c);
    char *tok = strdup(k.tok[0]);
    ckpts_fini(&k);
    zp_pipeline *other = zp_pipe(zp_task(numbers_paced, .branch = true),
                                 zp_task(tenfold, .workers = 4));
    run_ckpt(other, "[300]", NULL, tok, c, &again);
    zp_pipeline_free(other);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_int_equal(c->n, 0);
    ckpts_fini(&again);
    /* the same pipeline, other arguments */
    run_ckpt(f->p, "[301]", NULL, tok, c, &again);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_error_has(c, "another pipeline or other arguments");
    ckpts_fini(&again);
    free(tok);
    collected_fini(c);
}

static void test_a_checkpoint_not_committed_fails_the_run(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    ckpts k = {.fail_at = 2};
    f->p = through(zp_task(tenfold, .workers = 4), false);
    run_ckpt(f->p, "[3000]", NULL, NULL, c, &k);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "was not committed");
    assert_int_equal(k.n, 2);
    ckpts_fini(&k);
    collected_fini(c);
}

/* ---- Join stages ------------------------------------------------------------
 */

/* A join task: the running total of its items every 100 items, then the
 * total. */
static int running_total(zp_call *call)
{
    const msgpack_object *item;
    int64_t sum = 0, n = 0;
    while (zp_next(call, &item)) {
        sum += item->via.i64;
        if (++n % 100 == 0 && zp_emit_int(call, sum) != 0)
            return -1;
    }
    return zp_emit_int(call, sum);
}

/* numbers_paced | no_thirds (two workers, ordered: the join's input
 * comes in one order) | join | pair (two workers, ordered). */
static zp_pipeline *joined(zp_task_fn join)
{
    return zp_pipe(
        zp_task(numbers_paced, .branch = true),
        zp_task(no_thirds, .workers = 2, .ordered = true),
        zp_task(join, .join = true, .branch = true),
        zp_task(pair, .branch = true, .workers = 2, .ordered = true));
}

/* The join stage's spill file in the test directory, into out. */
static void spill_file(char *out, size_t len)
{
    DIR *d = opendir(test_dir);
    struct dirent *e;
    out[0] = '\0';
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "zpipe-", 6) == 0)
            snprintf(out, len, "%s/%s", test_dir, e->d_name);
    if (d != NULL)
        closedir(d);
    if (out[0] == '\0')
        fail_msg("no spill file in %s", test_dir);
}

/* A first run of p on [n] that "crashes" at its end (the finished token
 * is not committed, so the spill file stays): its outputs in c, its
 * tokens in k; returns a mid-run token's index whose join part says the
 * spill held items. */
static size_t crashed_run(zp_pipeline *p, int64_t n, collected *c, ckpts *k)
{
    char args[32];
    snprintf(args, sizeof args, "[%lld]", (long long)n);
    k->fail_done = true;
    run_ckpt(p, args, NULL, NULL, c, k);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "was not committed");
    assert_tokens(k, c, 0, (uint64_t)n);
    size_t t = mid_token(k, (uint64_t)n);
    const char *join = strrchr(k->tok[t], '.');
    assert_non_null(join);
    assert_non_null(strchr(join, '-')); /* ".B-N" */
    return t;
}

/*
 * Checks a join stage: a run resumed from a token taken mid-run gives
 * exactly the outputs the first run gave after it, in the same order; the
 * run that ends well removes the spill file, so resuming from that token
 * again fails; a spill file shorter than the token says fails too.
 */
static void check_join(fixture *f, zp_task_fn join, int64_t n)
{
    collected *c = &f->c;
    ckpts k = {0}, again = {0};
    char args[32], spill[512];
    snprintf(args, sizeof args, "[%lld]", (long long)n);
    test_dir_make();
    spill_dir = test_dir;
    f->p = joined(join);
    size_t t = crashed_run(f->p, n, c, &k), at = k.at[t];
    print_message("%zu outputs, %zu checkpoints, resumed from %s\n", c->n, k.n,
                  k.tok[t]);
    int64_t *rest = copy_of(c->v + at, c->n - at, true);
    size_t nrest = c->n - at;
    run_ckpt(f->p, args, NULL, k.tok[t], c, &again);
    assert_run_ok(c);
    assert_tokens(&again, c, k.k[t], (uint64_t)n);
    assert_same(c->v, c->n, rest, nrest, true, "the resumed run");
    assert_int_equal(test_dir_count("zpipe-"), 0); /* it ended well */
    ckpts_fini(&again);
    /* the spill file is gone */
    run_ckpt(f->p, args, NULL, k.tok[t], c, &again);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_error_has(c, "spill file");
    ckpts_fini(&again);
    ckpts_fini(&k);
    /* a spill file shorter than the token says */
    t = crashed_run(f->p, n, c, &k);
    spill_file(spill, sizeof spill);
    assert_int_equal(truncate(spill, 1), 0);
    run_ckpt(f->p, args, NULL, k.tok[t], c, &again);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_error_has(c, "shorter than");
    ckpts_fini(&again);
    /* a token whose join part is cut short */
    char *cut = strdup(k.tok[t]);
    *strrchr(cut, '-') = '\0';
    run_ckpt(f->p, args, NULL, cut, c, &again);
    free(cut);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_error_has(c, "is not a checkpoint token");
    spill_dir = NULL;
    free(rest);
    ckpts_fini(&again);
    ckpts_fini(&k);
    collected_fini(c);
}

static void test_a_join_with_one_output_resumes_from_its_spill(void **state)
{
    check_join(*state, total, 3000);
}

static void test_a_join_with_many_outputs_resumes_from_its_spill(void **state)
{
    check_join(*state, running_total, 3000);
}

/* A join stage keeps its input in checkpoint_dir: without one, the run
 * says so at its start. */
static void test_a_join_stage_needs_a_checkpoint_dir(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    ckpts k = {0};
    spill_dir = NULL;
    f->p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(total, .join = true));
    run_ckpt(f->p, "[10]", NULL, NULL, c, &k);
    assert_int_equal(c->rc, ZP_EINVAL);
    assert_error_has(c, "checkpoint_dir");
    ckpts_fini(&k);
    collected_fini(c);
}

/* ---- main ------------------------------------------------------------------
 */

int main(int argc, char **argv)
{
    int rc = process_tests_init("checkpoint_test", &argc, &argv);
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        TEST(test_a_thread_stage_passes_checkpoints_on),
        TEST(test_an_ordered_thread_stage_passes_checkpoints_in_order),
        TEST(test_an_async_stage_passes_checkpoints_on),
        TEST(test_an_ordered_async_stage_passes_checkpoints_in_order),
        TEST(test_a_process_stage_passes_checkpoints_on),
        TEST(test_an_ordered_process_stage_passes_checkpoints_in_order),
        TEST(test_a_remote_stage_passes_checkpoints_on),
        TEST(test_a_nested_pipeline_stage_passes_checkpoints_on),
        TEST(test_a_process_worker_dying_mid_batch_delays_a_marker),
        TEST(test_retries_and_skips_count_right_across_markers),
        TEST(test_async_retries_and_skips_count_right_across_markers),
        TEST(test_process_retries_and_skips_count_right_across_markers),
        TEST(test_a_huge_branch_goes_through_checkpoints),
        TEST(test_another_pipelines_token_fails_the_run),
        TEST(test_a_checkpoint_not_committed_fails_the_run),
        TEST(test_a_join_with_one_output_resumes_from_its_spill),
        TEST(test_a_join_with_many_outputs_resumes_from_its_spill),
        TEST(test_a_join_stage_needs_a_checkpoint_dir),
        cmocka_unit_test(test_no_child_process_or_temp_dir_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
