/* SPDX-License-Identifier: MIT */
/*
 * zpipe: concurrent and distributed data pipelines in C.
 *
 * This is the only header a user includes. Tasks are plain C functions that
 * read one msgpack item and emit msgpack items; a pipeline is a chain of
 * tasks; a run streams items through the chain with every stage running
 * concurrently, stages joined by bounded ZeroMQ queues.
 *
 * Items are msgpack values: tasks read `const msgpack_object *` and write
 * through a `msgpack_packer *`, so this header pulls in <msgpack.h>. Async
 * tasks run on a libuv loop, which this header only forward-declares:
 * include <uv.h> where you write one. ZeroMQ never appears here.
 */
#ifndef ZPIPE_H
#define ZPIPE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ZP__CONSTRUCTOR runs a function when the program or plugin is loaded:
 * ZP_TASK and ZP_ASYNC_TASK register tasks with it, and need GCC or Clang
 * (or a compiler that passes for them). Without one, those two macros fail
 * to compile with a message that says so; everything else works. */
#if defined(__GNUC__)
#define ZP_EXPORT __attribute__((visibility("default")))
#define ZP__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ZP__CONSTRUCTOR __attribute__((constructor))
#else
#define ZP_EXPORT
#define ZP__PRINTF(f, a)
#if defined(__cplusplus)
#define ZP__CONSTRUCTOR static_assert(false, ZP__NO_CONSTRUCTOR);
#else
#define ZP__CONSTRUCTOR _Static_assert(0, ZP__NO_CONSTRUCTOR);
#endif
#define ZP__NO_CONSTRUCTOR                                                 \
    "ZP_TASK and ZP_ASYNC_TASK need __attribute__((constructor)) (GCC or " \
    "Clang): call zp_register() or zp_register_async() instead"
#endif

/* ZP_VERSION_MAJOR, ZP_VERSION_MINOR, ZP_VERSION_PATCH and ZP_VERSION_STRING
 * ("MAJOR.MINOR.PATCH"): the version of this header, which zp_version()
 * returns for the library. The build writes them from CMakeLists.txt. */
#include "zpipe_version.h"

/* Error codes: 0 is success, every failure is negative. */
enum zp_err {
    ZP_OK = 0,
    ZP_EINVAL = -1,    /* a bad argument, option or spec                      */
    ZP_ENOMEM = -2,    /* out of memory                                       */
    ZP_ETASK = -3,     /* a task failed (zp_fail, or it broke a task rule)    */
    ZP_ECANCELED = -4, /* the run was cancelled with zp_cancel                */
    ZP_ENOTSUP = -5,   /* asked for something this build cannot do yet        */
    ZP_EPROTO = -6,    /* a malformed message or item                         */
    ZP_EIO = -7,       /* a transport or operating-system failure             */
};

/* A static, human-readable description of an error code. Never NULL. */
ZP_EXPORT const char *zp_strerror(int err);

/* The library's version, "MAJOR.MINOR.PATCH". */
ZP_EXPORT const char *zp_version(void);

typedef struct zp_call zp_call;
typedef struct zp_pipeline zp_pipeline;
typedef struct zp_run zp_run;

typedef int (*zp_task_fn)(zp_call *call);

/* libuv's loop, as <uv.h> declares it (a repeated typedef is valid C11). */
typedef struct uv_loop_s uv_loop_t;
typedef void (*zp_async_fn)(zp_call *call, uv_loop_t *loop);

/* Where a stage's workers run (zp_opts.mode), and what a failed item does
 * (zp_opts.on_error). */
typedef enum zp_mode { ZP_INPROC = 0, ZP_PROCESS = 1, ZP_REMOTE = 2 } zp_mode;
typedef enum zp_on_error { ZP_FAIL = 0, ZP_SKIP = 1 } zp_on_error;

/*
 * Options of one stage. Every field's zero value is the sensible default, so
 * the zp_task() macro takes them as designated initializers:
 *   zp_task(square, .workers = 4, .ordered = true)
 * `size` is filled in by the macros; leave it alone.
 */
typedef struct zp_opts {
    size_t size;          /* sizeof(zp_opts), set by the macros          */
    int workers;          /* concurrent executions (async: calls in
                             flight); 0 = 1                              */
    bool branch;          /* may emit any number of outputs per input    */
    bool join;            /* called once, pulls the stream with zp_next  */
    bool ordered;         /* outputs leave in input order                */
    int throttle;         /* max items waiting at the output; 0 = 4096   */
    int retries;          /* extra attempts of a failed item             */
    int timeout_ms;       /* per item, process and remote modes only     */
    zp_on_error on_error; /* ZP_FAIL (stop the run), ZP_SKIP (drop, count) */
    const char *bind;     /* JSON text handed to every call as msgpack   */
    void *user;           /* borrowed, handed to every call (in-process) */
    zp_mode mode;         /* ZP_INPROC, ZP_PROCESS or ZP_REMOTE          */
    const char *pool;     /* mode=remote: only the workers that joined
                             this pool (1 to 64 of A-Z a-z 0-9 _ . -;
                             copied); NULL: any worker serving the task  */
} zp_opts;

/* The default throttle, used when zp_opts.throttle is 0. */
#define ZP_DEFAULT_THROTTLE 4096

/* ---- Registration ------------------------------------------------------ */

/*
 * Registers a task function under a name, so that zp_parse() (and, later,
 * worker processes) can find it. Normally called through ZP_TASK. Returns 0,
 * ZP_EINVAL for a NULL or empty name or function, or ZP_EINVAL when another
 * function already holds the name. Thread-safe.
 */
ZP_EXPORT int zp_register(const char *name, zp_task_fn fn);

/* The function registered under `name`, or NULL. Thread-safe. */
ZP_EXPORT zp_task_fn zp_lookup(const char *name);

/* As zp_register and zp_lookup, for async tasks (ZP_ASYNC_TASK). A name
 * holds one function: sync or async, never both. */
ZP_EXPORT int zp_register_async(const char *name, zp_async_fn fn);
ZP_EXPORT zp_async_fn zp_lookup_async(const char *name);

/*
 * ZP_TASK(fn); at file scope declares `int fn(zp_call *call)` and registers
 * it under its own name when the program (or plugin) is loaded.
 */
#define ZP_TASK(fn)                                     \
    int fn(zp_call *call);                              \
    ZP__CONSTRUCTOR static void zp__register_##fn(void) \
    {                                                   \
        (void)zp_register(#fn, fn);                     \
    }                                                   \
    int fn(zp_call *call)

/*
 * ZP_ASYNC_TASK(fn); at file scope declares
 * `void fn(zp_call *call, uv_loop_t *loop)` and registers it as an async
 * task. It starts non-blocking work on `loop` and returns at once; a later
 * callback on the same loop emits the outputs and ends the call with
 * exactly one zp_done() or zp_fail().
 */
#define ZP_ASYNC_TASK(fn)                                     \
    void fn(zp_call *call, uv_loop_t *loop);                  \
    ZP__CONSTRUCTOR static void zp__register_async_##fn(void) \
    {                                                         \
        (void)zp_register_async(#fn, fn);                     \
    }                                                         \
    void fn(zp_call *call, uv_loop_t *loop)

/*
 * The first line of main(). Removes zpipe's own flags from argv. With
 * `--zp-worker ENDPOINT` (or $ZPIPE_WORKER) the process becomes a worker:
 * it connects to the coordinator at ENDPOINT, serves its registered tasks
 * (`--zp-threads N` at once; in the pool `--zp-pool NAME` or $ZPIPE_POOL;
 * CURVE with `--zp-curve-server FILE` and `--zp-curve-secret FILE`) and
 * exits when told to, never returning.
 * Process workers are started this way; so are remote ones.
 */
ZP_EXPORT void zp_init(int *argc, char ***argv);

/* ---- Building ---------------------------------------------------------- */

/*
 * zp_task(fn, .opts...) makes a one-stage pipeline running `fn` (named by
 * its C identifier). Never NULL: a bad option, or running out of memory, is
 * recorded and reported by zp_pipeline_error() and by any run.
 */
#define zp_task(...) ZP__TASK(__VA_ARGS__, )
#define ZP__TASK(fn, ...)  \
    zp_task_new(#fn, (fn), \
                &(const zp_opts){.size = sizeof(zp_opts), __VA_ARGS__})
ZP_EXPORT zp_pipeline *zp_task_new(const char *name, zp_task_fn fn,
                                   const zp_opts *opts);

/*
 * zp_async_task(fn, .opts...) makes a one-stage pipeline running the async
 * task `fn` on an event loop, with .workers calls in flight at most. Async
 * tasks may be branch, ordered, retried and skipped; they cannot be join
 * (zp_next would block the loop). Never NULL, as zp_task.
 */
#define zp_async_task(...) ZP__ASYNC_TASK(__VA_ARGS__, )
#define ZP__ASYNC_TASK(fn, ...)  \
    zp_async_task_new(#fn, (fn), \
                      &(const zp_opts){.size = sizeof(zp_opts), __VA_ARGS__})
ZP_EXPORT zp_pipeline *zp_async_task_new(const char *name, zp_async_fn fn,
                                         const zp_opts *opts);

/*
 * zp_remote_task("score", .opts...) makes a one-stage pipeline of the task
 * named "score" run by remote workers only (its mode is ZP_REMOTE whatever
 * .mode says): this process need not have the task; the run waits up to
 * zp_run_opts.wait_workers_ms for a worker that announces it (in .pool,
 * when given), then fails naming it. Never NULL, as zp_task.
 */
#define zp_remote_task(...) ZP__REMOTE_TASK(__VA_ARGS__, )
#define ZP__REMOTE_TASK(name, ...) \
    zp_remote_task_new((name),     \
                       &(const zp_opts){.size = sizeof(zp_opts), __VA_ARGS__})
ZP_EXPORT zp_pipeline *zp_remote_task_new(const char *name,
                                          const zp_opts *opts);

/*
 * Chains pipelines: zp_pipe(a, b, c) runs a's outputs through b, then c.
 * Takes ownership of every argument (they must not be used afterwards), and
 * of NULL-terminated lists only through the macro, which adds the NULL.
 * Never NULL.
 */
#define zp_pipe(...) zp_pipe_list(__VA_ARGS__, (zp_pipeline *)NULL)
ZP_EXPORT zp_pipeline *zp_pipe_list(zp_pipeline *first, ...);

/*
 * zp_task_pipeline(inner, .opts...) uses a whole pipeline as one task: each
 * input item runs `inner` with [item] as its arguments. With .branch the
 * inner outputs are emitted one by one, otherwise collected into one msgpack
 * array. Takes ownership of `inner`. Never NULL.
 */
#define zp_task_pipeline(...) ZP__TASK_PIPELINE(__VA_ARGS__, )
#define ZP__TASK_PIPELINE(inner, ...) \
    zp_task_pipeline_new(             \
        (inner), &(const zp_opts){.size = sizeof(zp_opts), __VA_ARGS__})
ZP_EXPORT zp_pipeline *zp_task_pipeline_new(zp_pipeline *inner,
                                            const zp_opts *opts);

/*
 * Parses a one-line spec, "range branch | square workers=4 | total join",
 * against the registered tasks. Returns a pipeline, or NULL with *err set to
 * a malloc'ed message (free() it) that quotes the spec and points at the
 * offending word. `err` may be NULL. A value written in a spec is the
 * value meant: `workers=0` is an error there (0 is zp_opts' "not set"),
 * while `throttle=0`, `retries=0` and `timeout=0` are their defaults.
 */
ZP_EXPORT zp_pipeline *zp_parse(const char *spec, char **err);

/* NULL, or why `p` is invalid (owned by p). */
ZP_EXPORT const char *zp_pipeline_error(const zp_pipeline *p);

/* Number of stages of `p`. */
ZP_EXPORT size_t zp_pipeline_stages(const zp_pipeline *p);

/* Frees `p`. NULL is harmless. No run of p may still be going on. */
ZP_EXPORT void zp_pipeline_free(zp_pipeline *p);

/* ---- Inside a task ------------------------------------------------------ */

/* This call's item; for the first task, the run's argument array. */
ZP_EXPORT const msgpack_object *zp_input(zp_call *c);

/*
 * Join tasks: the next item of the stream into *item (valid until the next
 * zp_next call). Returns false at the end of the stream or when the run
 * stops. Blocks while upstream has nothing ready.
 */
ZP_EXPORT bool zp_next(zp_call *c, const msgpack_object **item);

/* The index of the current item in the stage's input stream. */
ZP_EXPORT uint64_t zp_index(zp_call *c);

/* The bind value, or NULL when the task has none. */
ZP_EXPORT const msgpack_object *zp_bound(zp_call *c);

/* The task's .user pointer. */
ZP_EXPORT void *zp_user(zp_call *c);

/* The packer for the next output: pack exactly one value, then zp_emit(). */
ZP_EXPORT msgpack_packer *zp_out(zp_call *c);

/*
 * Sends the value packed through zp_out() downstream. Blocks while
 * downstream is full. Returns 0, or nonzero when the run is stopping (or the
 * task broke a rule, such as a non-branch task emitting twice): the task
 * should then return at once, passing the value on.
 */
ZP_EXPORT int zp_emit(zp_call *c);
ZP_EXPORT int zp_emit_int(zp_call *c, int64_t v);
ZP_EXPORT int zp_emit_uint(zp_call *c, uint64_t v);
ZP_EXPORT int zp_emit_double(zp_call *c, double v);
ZP_EXPORT int zp_emit_bool(zp_call *c, bool v);
ZP_EXPORT int zp_emit_str(zp_call *c, const char *s);
ZP_EXPORT int zp_emit_obj(zp_call *c, const msgpack_object *o);
ZP_EXPORT int zp_emit_nil(zp_call *c);

/*
 * Records an error for this item. Returns ZP_ETASK, so a task can end with
 * `return zp_fail(call, "bad value %d", v);`. A task that returns nonzero
 * without calling zp_fail fails with a generic message. In an async task,
 * zp_fail also ends the call, as zp_done does.
 */
ZP_EXPORT int zp_fail(zp_call *c, const char *fmt, ...) ZP__PRINTF(2, 3);

/*
 * Async tasks: ends the call successfully. Each call ends with exactly one
 * zp_done() or zp_fail(), from the task function itself or from any later
 * callback on the loop; `c` and its input stay valid until then, and not
 * after. zp_emit() never blocks an async task: when downstream is full its
 * outputs wait in the stage, and no new call starts until they have left.
 * Ignored (with a logged warning) for a sync task or an ended call.
 */
ZP_EXPORT void zp_done(zp_call *c);

/* ---- Running ------------------------------------------------------------ */

/* Options of one run; all-zero is the default. Strings are copied. */
typedef struct zp_run_opts {
    const char *listen;       /* where remote workers connect, e.g.
                                 "tcp://0.0.0.0:5555": every remote stage
                                 of the run is served through it; NULL:
                                 $ZPIPE_LISTEN                           */
    int wait_workers_ms;      /* longest a remote stage with items waits
                                 for a worker that serves its task (in
                                 its pool); 0: the default               */
    const char *curve_secret; /* CURVE: the coordinator's secret key file */
    const char *curve_allow;  /* CURVE: file of allowed worker public keys */
    bool progress;            /* print the live per-stage statistics on
                                 stderr while the run goes (a table redrawn
                                 4 times a second on a terminal, a line per
                                 stage each second otherwise), then a
                                 summary when it ends                     */
    const char *stats_path;   /* zp_finish() writes the final statistics
                                 there as JSON (see docs/cli.md); failing
                                 to write them fails an otherwise good run
                                 with ZP_EIO                              */
    /* "127.0.0.1:9464", ":9464" (every IPv4 address) or "[::1]:9464":
     * serve GET /metrics there, in Prometheus's text format, while the run
     * lasts (docs/cli.md lists the metrics); port 0 picks a free one.
     * NULL: $ZPIPE_METRICS, or none. A bad address or one in use fails the
     * run at its start with ZP_EINVAL, naming it. Nested runs (tasks made
     * with zp_task_pipeline) never serve metrics. */
    const char *metrics_listen;
    /* Once the run is over, its endpoint serves the final figures
     * (zpipe_run_up 0) until it has been scraped once more, or this long
     * at most: zp_finish() waits for that. 0: it closes at once. */
    int metrics_linger_ms;
    /* The number of items the first task will emit, when known (0:
     * unknown): `progress` then also shows the share of them the second
     * stage is through with, and the time left. */
    uint64_t progress_total;
    /*
     * Durable runs (docs/durability.md). With on_checkpoint, the run takes
     * a checkpoint every checkpoint_ms (0: 1000): a cut of its stream
     * after the first task's first K outputs, which every stage passes on
     * once it has finished all it took before. on_checkpoint is then
     * called on the thread that calls zp_run_next(), between outputs:
     * every output returned before the call, and no other, is the run's
     * output up to `token` (printable text, under 400 bytes: 64 and 42
     * more per join stage; valid during the call). The caller commits its sink
     * and the token together; nonzero fails the run with ZP_ETASK. The last
     * call comes after the last output of a run that succeeded, before
     * zp_run_next() returns false, with a token that marks the run finished.
     */
    int (*on_checkpoint)(void *user, const char *token);
    void *checkpoint_user; /* handed to on_checkpoint                    */
    int checkpoint_ms;     /* between two checkpoints; 0: 1000           */
    /*
     * A token from an earlier run of the same pipeline and arguments
     * (tasks, their order and flags, bind values; not workers, throttle,
     * mode or pool, which may change): the first task runs again and its
     * first K outputs are dropped unsent (it must emit the same items in
     * the same order), so the run goes on after the outputs that were
     * committed. A finished token: no output, success. Another pipeline's
     * or other arguments' token fails the run at its start with ZP_EINVAL.
     * Exactly-once output; a task may run again on an item after a crash.
     */
    const char *resume;
    /*
     * The folder where join stages keep their input between checkpoints
     * (one spill file each, named from the pipeline's fingerprint and the
     * stage's place; removed once the finished token was committed): it
     * must survive what the run must survive. A join stage of a run with
     * on_checkpoint or resume needs it (NULL: ZP_EINVAL naming this
     * option) and one worker; a resumed join task gets the items it took
     * before the checkpoint again, then the live ones, and must emit the
     * same outputs for the same items in the same order.
     */
    const char *checkpoint_dir;
} zp_run_opts;

/* How long a remote stage waits for a worker by default. */
#define ZP_DEFAULT_WAIT_WORKERS_MS 30000

/*
 * Starts running `p` with `args_json` (a JSON array such as "[20]", a
 * single JSON value, which becomes a one-element array, or NULL for no
 * arguments) as the first task's input. Borrows `p`: keep it until
 * zp_run_free(). One pipeline may be run many times, also at once. Never
 * NULL: a configuration error comes back from zp_finish()/zp_error().
 *
 * Open files: the first run raises the process's soft limit of open files
 * (RLIMIT_NOFILE) to its hard limit, once, as worker mode does; processes
 * started afterwards inherit it. A run whose stages need more descriptors
 * than that (two per thread worker, one per process worker) fails at once
 * with ZP_EINVAL, naming the stage.
 */
ZP_EXPORT zp_run *zp_start(zp_pipeline *p, const char *args_json);
ZP_EXPORT zp_run *zp_start_with(zp_pipeline *p, const char *args_json,
                                const zp_run_opts *o);

/*
 * The next output of the run into *out, valid until the next zp_run_next()
 * or zp_run_free(). Returns false at the end, on failure or cancellation.
 * Blocks until an output is ready. Call from one thread at a time.
 */
ZP_EXPORT bool zp_run_next(zp_run *r, const msgpack_object **out);

/*
 * Waits for the end of the run (outputs not read are discarded), joins
 * every thread, and returns 0 or the first error's code. Idempotent.
 */
ZP_EXPORT int zp_finish(zp_run *r);

/* NULL, or the first error: "task 'square' failed on item 17: <message>". */
ZP_EXPORT const char *zp_error(zp_run *r);

/* Stops the run as soon as possible. Thread-safe; any thread; idempotent. */
ZP_EXPORT void zp_cancel(zp_run *r);

/* Cancels the run if it is still going, finishes it and frees it. */
ZP_EXPORT void zp_run_free(zp_run *r);

/*
 * The buckets of zp_stage_stats.item_hist: bucket i < ZP_HIST_BUCKETS - 1
 * counts the items that took at most ZP_HIST_BOUNDS_US[i] microseconds
 * (and more than the bound before it); the last bucket counts the rest.
 * Use it as `static const uint64_t bounds[] = {ZP_HIST_BOUNDS_US};`.
 */
#define ZP_HIST_BUCKETS 9
#define ZP_HIST_BOUNDS_US \
    10, 100, 1000, 10000, 100000, 1000000, 10000000, 60000000

/* Statistics of one stage of a run, readable while it runs and after. */
typedef struct zp_stage_stats {
    const char *task;        /* the task's name (owned by the pipeline)       */
    int workers;             /* concurrent executions                         */
    int throttle;            /* bound of the stage's output queue, in items   */
    uint64_t items_in;       /* items taken from upstream                     */
    uint64_t items_out;      /* outputs sent downstream                       */
    uint64_t failed;         /* items that failed (after retries)             */
    uint64_t retried;        /* extra attempts made                           */
    uint64_t skipped;        /* failed items dropped by on_error = ZP_SKIP    */
    uint64_t queue_hwm;      /* most items ever waiting at the stage's output */
    uint64_t busy_ns;        /* time spent inside the task, all workers       */
    uint64_t restarts;       /* worker processes replaced after they died     */
    uint64_t in_flight;      /* items being worked on now                     */
    uint64_t peak_in_flight; /* most items ever worked on at once (thread
                                stages of calls under ~20 us: the most
                                seen by readers of these statistics)   */
    int workers_alive;       /* workers running now (threads, the async loop's
                                calls capacity, or connected worker processes) */
    uint64_t queue_items;    /* items waiting at the stage's output now */
    /* Items by the task's own time on each (buckets: ZP_HIST_BOUNDS_US),
     * and their total time. Process and remote stages count each item of
     * a batch at the batch's average, from the time its worker reports. */
    uint64_t item_hist[ZP_HIST_BUCKETS];
    uint64_t item_hist_ns;
} zp_stage_stats;

/*
 * Copies the statistics of stage `i` into *st: live while the run goes, the
 * final figures once zp_finish() returned. Returns 0, or ZP_EINVAL when the
 * run has no stage i (or failed before it started). May be called from any
 * thread, but not while another thread is inside zp_finish() or
 * zp_run_free() for the same run.
 */
ZP_EXPORT int zp_run_stats(zp_run *r, size_t i, zp_stage_stats *st);

/* Number of stages of the run (0 when it failed to start). */
ZP_EXPORT size_t zp_run_stages(zp_run *r);

/* ---- Logging ------------------------------------------------------------ */

/* How much a log line matters. The values are syslog's priorities. */
typedef enum zp_log_level {
    ZP_LOG_ERROR = 3, /* something failed: a worker cannot start, a
                         connection cannot be accepted                   */
    ZP_LOG_WARN = 4,  /* something was dropped, ignored or lost, and the
                         run goes on: a malformed message, a silent worker */
    ZP_LOG_INFO = 6,  /* news: where something is served                 */
} zp_log_level;

/*
 * A log hook: receives one line of the library's log at `level`. `line` is
 * the whole line as stderr would show it ("zpipe: ..." or "zpipe worker:
 * ..."), without its newline, valid only during the call (copy it to keep
 * it). `user` is what zp_log_set() was given.
 */
typedef void (*zp_log_fn)(void *user, zp_log_level level, const char *line);

/*
 * Sends every line the library logs in this process (the coordinator, its
 * thread and async workers, and worker mode) to `fn` instead of stderr.
 * fn NULL restores the default, which writes each line and a newline to
 * stderr. `user` is borrowed, handed to every call of fn.
 *
 * Thread-safe: lines come from many threads, and fn runs on the thread
 * that logs, for one line at a time (never twice at once). Once
 * zp_log_set() returns, the previous hook is not running and will not be
 * called again, so its `user` may be freed. fn must be quick (other
 * threads that log wait for it) and must not call back into zpipe: not
 * into a run (zp_run_next, zp_cancel...) and not zp_log_set(). Lines a
 * peer can provoke are rate-limited before they reach fn, as on stderr.
 * Process workers run this program again: a hook set before zp_init()
 * takes their lines there too.
 */
ZP_EXPORT void zp_log_set(zp_log_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif /* ZPIPE_H */
