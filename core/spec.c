/* SPDX-License-Identifier: MIT */
/*
 * The spec parser: "range branch | square workers=4 | total join" into a
 * pipeline of registered tasks (or, for a mode=remote stage, of a task only
 * remote workers have). Part of core, used by the zpipe CLI and by
 * anyone who builds a pipeline from text. It reads the spec once, builds
 * each stage with zp_task_new() and chains the stages with zp_pipe_list();
 * option values are checked by the pipeline module, not repeated here. On a
 * bad spec it returns a message that quotes the spec and points at the
 * offending word with a caret, as a compiler does. Specs are a line long and
 * parsed once per run: nothing here is on the item path, and it never runs
 * anything.
 */
#include "zpipe.h"

#include <assert.h>
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/pipeline.h"

/* Where the parser is, and where its error message goes. */
typedef struct parser {
    const char *spec; /* borrowed; the whole spec, quoted in errors      */
    const char *at;   /* the next character to read                      */
    const char *bar;  /* the '|' that began this stage, or NULL          */
    int stage;        /* 1-based number of the stage being read          */
    char **err;       /* borrowed; where the message goes, may be NULL   */
} parser;

/* One stage while it is read. */
typedef struct stage {
    const char *word; /* borrowed; the task's name in the spec          */
    char *name;       /* owned; the task's name                         */
    zp_task_fn fn;    /* the registered task, or NULL ...               */
    zp_async_fn afn;  /* ... when it is an async one                    */
    zp_opts opts;     /* opts.bind points at `bind`, opts.pool at `pool` */
    char *bind;       /* owned; the bind JSON text, or NULL             */
    char *pool;       /* owned; the pool's name, or NULL                */
    unsigned seen;    /* bit i set: options[i] was given                */
} stage;

/* COUNT: a NUMBER of at least 1. A stage's zp_opts take 0 for "not set",
 * but `workers=0` written in a spec asks for something else than the one
 * worker it would get: a mistake, and said so. */
enum kind { FLAG, NUMBER, COUNT, DURATION, CHOICE, JSON, WORD };

typedef struct choice {
    const char *name;
    int value;
} choice;

typedef struct option {
    const char *name;
    enum kind kind;
    size_t offset;         /* of its field in zp_opts; unused for JSON
                              and WORD                                */
    const choice *choices; /* CHOICE: the words it accepts             */
    const char *expected;  /* what a bad value should have looked like */
} option;

static const choice modes[] = {{"inproc", ZP_INPROC},
                               {"process", ZP_PROCESS},
                               {"remote", ZP_REMOTE},
                               {NULL, 0}};
static const choice on_errors[] = {
    {"fail", ZP_FAIL}, {"skip", ZP_SKIP}, {NULL, 0}};

/* read_value writes CHOICE fields, zp_mode and zp_on_error, as ints. */
_Static_assert(sizeof(zp_mode) == sizeof(int) &&
                   sizeof(zp_on_error) == sizeof(int),
               "zp_opts' enum fields are the size of an int");

#define NUMBER_EXPECTED "a whole number (digits only, at most 2147483647)"
#define COUNT_EXPECTED \
    "a whole number, at least 1 (digits only, at most 2147483647)"

static const option options[] = {
    {"branch", FLAG, offsetof(zp_opts, branch), NULL, NULL},
    {"join", FLAG, offsetof(zp_opts, join), NULL, NULL},
    {"ordered", FLAG, offsetof(zp_opts, ordered), NULL, NULL},
    {"workers", COUNT, offsetof(zp_opts, workers), NULL, COUNT_EXPECTED},
    {"throttle", NUMBER, offsetof(zp_opts, throttle), NULL, NUMBER_EXPECTED},
    {"retries", NUMBER, offsetof(zp_opts, retries), NULL, NUMBER_EXPECTED},
    {"timeout", DURATION, offsetof(zp_opts, timeout_ms), NULL,
     "a duration such as 500ms, 2s or 500 (milliseconds)"},
    {"mode", CHOICE, offsetof(zp_opts, mode), modes,
     "inproc, process or remote"},
    {"on_error", CHOICE, offsetof(zp_opts, on_error), on_errors,
     "fail or skip"},
    {"bind", JSON, 0, NULL, NULL},
    {"pool", WORD, 0, NULL, NULL},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

_Static_assert(N_OPTIONS <= sizeof(unsigned) * CHAR_BIT,
               "stage.seen has a bit for every option");

/* ---- Characters and words ------------------------------------------------ */

static bool is_space(char c)
{
    return isspace((unsigned char)c) != 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A word (task name, option or value) ends at whitespace, '|' or the end. */
static bool ends_word(char c)
{
    return c == '\0' || c == '|' || is_space(c);
}

static const char *skip_space(const char *s)
{
    while (is_space(*s))
        s++;
    return s;
}

static const char *word_end(const char *s)
{
    while (!ends_word(*s))
        s++;
    return s;
}

/* ---- Error messages ------------------------------------------------------ */

/* Display columns of s[0..len): UTF-8 continuation bytes take none. */
static size_t columns(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Copies s to w with whitespace turned into spaces, so that the message
 * stays three lines and the caret lines up. Returns the end of the copy. */
static char *put_flat(char *w, const char *s)
{
    for (; *s != '\0'; s++)
        *w++ = is_space(*s) ? ' ' : *s;
    return w;
}

/* Writes n copies of c at w. Returns the end. */
static char *put_run(char *w, char c, size_t n)
{
    memset(w, c, n);
    return w + n;
}

/* Ends a line and starts the next with two spaces and `col` more. */
static char *put_indent(char *w, size_t col)
{
    *w++ = '\n';
    return put_run(w, ' ', col + 2);
}

/*
 * "<head> in stage N (column C)", then the spec indented by two, then a
 * caret under the word [at, at + len) and '~' under the rest of it.
 * Returns a malloc'ed message, or NULL when out of memory.
 */
static char *render(const parser *ps, const char *head, const char *at,
                    size_t len)
{
    size_t col = columns(ps->spec, (size_t)(at - ps->spec));
    size_t width = columns(at, len);
    char *line1 =
        zp__strdupf("%s in stage %d (column %zu)", head, ps->stage, col + 1);
    if (line1 == NULL)
        return NULL;
    size_t size = strlen(line1) + 3 + strlen(ps->spec) + 3 + col + width + 2;
    char *msg = zp__malloc(size);
    if (msg != NULL) {
        char *w = put_flat(msg, line1);
        w = put_flat(put_indent(w, 0), ps->spec);
        w = put_indent(w, col);
        *w++ = '^';
        w = put_run(w, '~', width > 1 ? width - 1 : 0);
        *w = '\0';
        assert((size_t)(w - msg) < size);
    }
    free(line1);
    return msg;
}

static int fail(parser *ps, const char *at, size_t len, const char *fmt, ...)
    ZP__PRINTF(4, 5);

/*
 * Records the parse error about the word [at, at + len): sets *ps->err (when
 * err was given) to the message, or to NULL when out of memory. Returns
 * ZP_EINVAL.
 */
static int fail(parser *ps, const char *at, size_t len, const char *fmt, ...)
{
    if (ps->err == NULL)
        return ZP_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    char *head = zp__vstrdupf(fmt, ap);
    va_end(ap);
    *ps->err = head != NULL ? render(ps, head, at, len) : NULL;
    free(head);
    return ZP_EINVAL;
}

/* ---- Values -------------------------------------------------------------- */

/* A plain decimal int: at least one digit, no sign, no more than INT_MAX. */
static bool parse_int(const char *s, size_t len, int *out)
{
    int v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]) || v > (INT_MAX - (s[i] - '0')) / 10)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Milliseconds from "500ms", "2s" or "500". */
static bool parse_duration(const char *s, size_t len, int *out)
{
    size_t digits = 0;
    while (digits < len && is_digit(s[digits]))
        digits++;
    const char *unit = s + digits;
    size_t ulen = len - digits;
    int scale = 1;
    if (ulen == 1 && unit[0] == 's')
        scale = 1000;
    else if (ulen != 0 && !(ulen == 2 && memcmp(unit, "ms", 2) == 0))
        return false;
    int v;
    if (!parse_int(s, digits, &v) || v > INT_MAX / scale)
        return false;
    *out = v * scale;
    return true;
}

static bool parse_choice(const choice *c, const char *s, size_t len, int *out)
{
    for (; c->name != NULL; c++) {
        if (strlen(c->name) == len && memcmp(c->name, s, len) == 0) {
            *out = c->value;
            return true;
        }
    }
    return false;
}

/* The end of the JSON string whose opening quote is at s, or NULL. */
static const char *string_end(const char *s)
{
    for (s++; *s != '"'; s++) {
        if (*s == '\0' || (*s == '\\' && *++s == '\0'))
            return NULL;
    }
    return s + 1;
}

/*
 * The end of the JSON string, object or array starting at s, or NULL when
 * it is never closed. Brackets are only counted, not matched in kind: the
 * JSON parser that reads the value later says what is wrong inside it.
 */
static const char *json_end(const char *s)
{
    size_t depth = 0;
    while (s != NULL && *s != '\0') {
        char c = *s;
        s = c == '"' ? string_end(s) : s + 1;
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']')
            depth--;
        if (depth == 0)
            return s;
    }
    return NULL;
}

/* ---- Options ------------------------------------------------------------- */

/* The field of `opts` at `offset`, as given in the options table. */
static void *field(zp_opts *opts, size_t offset)
{
    return (char *)opts + offset;
}

static const option *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len &&
            memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Reads the value of a NUMBER, COUNT, DURATION or CHOICE option at ps->at. */
static int read_value(parser *ps, stage *st, const option *o)
{
    assert(o->kind == NUMBER || o->kind == COUNT || o->kind == DURATION ||
           o->kind == CHOICE);
    const char *v = ps->at;
    size_t len = (size_t)(word_end(v) - v);
    int *value = field(&st->opts, o->offset);
    bool ok;
    if (o->kind == NUMBER || o->kind == COUNT)
        ok = parse_int(v, len, value) && (o->kind == NUMBER || *value >= 1);
    else if (o->kind == DURATION)
        ok = parse_duration(v, len, value);
    else
        ok = parse_choice(o->choices, v, len, value);
    if (!ok)
        return fail(ps, v, len, "bad value '%.*s' for %s: expected %s",
                    (int)len, v, o->name, o->expected);
    ps->at = v + len;
    return 0;
}

/*
 * Reads a bind value at ps->at: a JSON string, object or array runs to its
 * closing quote or bracket (spaces and '|' inside it included), anything
 * else to the end of the word.
 */
static int read_bind(parser *ps, stage *st)
{
    const char *v = ps->at;
    bool bracketed = *v == '{' || *v == '[' || *v == '"';
    const char *end = bracketed ? json_end(v) : word_end(v);
    if (end == NULL)
        return fail(ps, v, strlen(v), "unterminated bind value '%s'", v);
    if (!ends_word(*end)) {
        size_t extra = (size_t)(word_end(end) - end);
        return fail(ps, end, extra, "unexpected '%.*s' after the bind value",
                    (int)extra, end);
    }
    st->bind = strndup(v, (size_t)(end - v));
    if (st->bind == NULL)
        return fail(ps, v, (size_t)(end - v), "out of memory");
    st->opts.bind = st->bind;
    ps->at = end;
    return 0;
}

/* Reads the pool's name at ps->at: the rest of the word. The pipeline
 * module checks it. */
static int read_pool(parser *ps, stage *st)
{
    const char *v = ps->at;
    size_t len = (size_t)(word_end(v) - v);
    st->pool = strndup(v, len);
    if (st->pool == NULL)
        return fail(ps, v, len, "out of memory");
    st->opts.pool = st->pool;
    ps->at = v + len;
    return 0;
}

static int unknown_option(parser *ps, const char *start, const char *name_end)
{
    /* "=4" has no name: quote the whole word instead. */
    if (name_end == start)
        name_end = word_end(start);
    int len = (int)(name_end - start);
    return fail(ps, start, (size_t)len, "unknown option '%.*s'", len, start);
}

/* Reads one option at ps->at, which is at the start of a word. */
static int read_option(parser *ps, stage *st)
{
    assert(!ends_word(*ps->at));
    const char *start = ps->at;
    const char *name_end = start;
    while (!ends_word(*name_end) && *name_end != '=')
        name_end++;
    size_t len = (size_t)(name_end - start);
    const option *o = find_option(start, len);
    if (o == NULL)
        return unknown_option(ps, start, name_end);
    unsigned bit = 1u << (o - options);
    if (st->seen & bit)
        return fail(ps, start, len, "repeated option '%s'", o->name);
    st->seen |= bit;
    if (o->kind == FLAG && *name_end == '=')
        return fail(ps, start, len, "flag '%s' takes no value", o->name);
    if (o->kind == FLAG) {
        *(bool *)field(&st->opts, o->offset) = true;
        ps->at = name_end;
        return 0;
    }
    if (*name_end != '=' || ends_word(name_end[1]))
        return fail(ps, start, len, "missing value for option '%s'", o->name);
    ps->at = name_end + 1;
    if (o->kind == JSON)
        return read_bind(ps, st);
    return o->kind == WORD ? read_pool(ps, st) : read_value(ps, st, o);
}

/* Reads options up to the '|' or the end that closes the stage. */
static int read_options(parser *ps, stage *st)
{
    int rc = 0;
    ps->at = skip_space(ps->at);
    while (rc == 0 && *ps->at != '\0' && *ps->at != '|') {
        rc = read_option(ps, st);
        ps->at = skip_space(ps->at);
    }
    return rc;
}

/* ---- Stages -------------------------------------------------------------- */

/* The stage has no task name: ps->at is at its closing '|' or the end. */
static int empty_stage(parser *ps)
{
    assert(*ps->at == '|' || *ps->at == '\0');
    if (*ps->at == '|')
        return fail(ps, ps->at, 1,
                    "empty stage: expected a task name before '|'");
    if (ps->bar == NULL)
        return fail(ps, ps->spec, 0, "empty spec: expected a task name");
    return fail(ps, ps->bar, 1, "empty stage: expected a task name after '|'");
}

/*
 * Builds the stage and appends it to *acc (which it may replace). A stage
 * the pipeline module rejects fails the parse, pointing at the task's name.
 * Its first-task error (join, workers > 1) does not: that rule is about the
 * whole pipeline, and zp_pipeline_error() of the result reports it.
 */
static int add_stage(parser *ps, zp_pipeline **acc, const stage *st)
{
    size_t len = strlen(st->name);
    zp_pipeline *one =
        st->fn == NULL && st->afn == NULL
            ? zp_remote_task_new(st->name, &st->opts)
            : zp__pipeline_stage(st->name, st->fn, st->afn, &st->opts, NULL);
    if (one->error != NULL) {
        int rc = fail(ps, st->word, len, "%s", one->error);
        zp_pipeline_free(one);
        return rc;
    }
    *acc = *acc != NULL ? zp_pipe_list(*acc, one, (zp_pipeline *)NULL) : one;
    if ((*acc)->error != NULL)
        return fail(ps, st->word, len, "%s", (*acc)->error);
    return 0;
}

/* Reads the stage at ps->at and appends it to *acc. */
static int read_stage(parser *ps, zp_pipeline **acc)
{
    ps->stage++;
    ps->at = skip_space(ps->at);
    stage st = {.word = ps->at, .opts = {.size = sizeof(zp_opts)}};
    size_t len = (size_t)(word_end(st.word) - st.word);
    if (len == 0)
        return empty_stage(ps);
    st.name = strndup(st.word, len);
    if (st.name == NULL)
        return fail(ps, st.word, len, "out of memory");
    st.fn = zp_lookup(st.name);
    st.afn = zp_lookup_async(st.name);
    ps->at = st.word + len;
    int rc = read_options(ps, &st);
    /* Only remote workers need have the task of a mode=remote stage. */
    if (rc == 0 && st.fn == NULL && st.afn == NULL && st.opts.mode != ZP_REMOTE)
        rc = fail(ps, st.word, len, "unknown task '%s'", st.name);
    if (rc == 0)
        rc = add_stage(ps, acc, &st);
    free(st.bind);
    free(st.pool);
    free(st.name);
    return rc;
}

zp_pipeline *zp_parse(const char *spec, char **err)
{
    parser ps = {spec != NULL ? spec : "", NULL, NULL, 0, err};
    zp_pipeline *p = NULL;
    ps.at = ps.spec;
    int rc = read_stage(&ps, &p);
    while (rc == 0 && *ps.at == '|') {
        ps.bar = ps.at++;
        rc = read_stage(&ps, &p);
    }
    if (rc != 0) {
        zp_pipeline_free(p);
        p = NULL;
    }
    return p;
}
