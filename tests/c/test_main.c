/*
 * C tests of libmain, driven by ffi/tests/c_abi.rs and scripts/test-ffi
 * (also under valgrind and AddressSanitizer).
 *
 *   test_main errors  MODEL TMPDIR        every error path: status + message
 *   test_main scores  MODEL PAIRS MAX_TOKENS NEGATIVES N_THREADS
 *                                          one main_score_batch; prints each
 *                                          pair's fields as hex bits
 *   test_main threads MODEL PAIRS MAX_TOKENS N_THREADS
 *                                          N_THREADS pthreads share MODEL, a
 *                                          scorer each; compares with one thread
 *   test_main detail  MODEL PAIRS TEXT_FILE per-token detail and text log-probs
 *
 * PAIRS is a file of NUL-separated strings: instruction, response,
 * instruction, response, ... (written by the Rust test, so any text works).
 * Exit status 0 when every check passed; failures are printed to stderr.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "main.h"

static int failures = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* A call must return `want` and leave a message containing `needle`. */
#define EXPECT_ERR(call, want, needle)                                         \
    do {                                                                       \
        main_status got_ = (call);                                             \
        const char *msg_ = main_last_error();                                  \
        CHECK(got_ == (want), "%s returned %s, want %s (message: %s)", #call,  \
              main_status_name((int)got_), main_status_name((int)(want)),      \
              msg_);                                                           \
        CHECK(strstr(msg_, (needle)) != NULL,                                  \
              "%s: message '%s' does not mention '%s'", #call, msg_,           \
              (needle));                                                       \
    } while (0)

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, main_last_error());
    exit(2);
}

/* ---- pairs file ------------------------------------------------------- */

typedef struct pairs {
    char *buf;
    const char **instructions;
    const char **responses;
    size_t n;
} pairs;

static pairs read_pairs(const char *path) {
    pairs p = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    p.buf = malloc((size_t)len + 1);
    if (fread(p.buf, 1, (size_t)len, f) != (size_t)len) {
        perror(path);
        exit(2);
    }
    fclose(f);
    p.buf[len] = 0;
    size_t n_strings = 0;
    for (long i = 0; i < len; i++)
        n_strings += p.buf[i] == 0;
    p.n = n_strings / 2;
    p.instructions = malloc(p.n * sizeof *p.instructions);
    p.responses = malloc(p.n * sizeof *p.responses);
    const char *s = p.buf;
    for (size_t i = 0; i < p.n; i++) {
        p.instructions[i] = s;
        s += strlen(s) + 1;
        p.responses[i] = s;
        s += strlen(s) + 1;
    }
    return p;
}

static void free_pairs(pairs *p) {
    free(p->buf);
    free(p->instructions);
    free(p->responses);
}

static uint64_t bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Bit-for-bit equality of two scores, field by field (memcmp would read the
 * struct's padding, which no one writes). */
static int same_score(const main_pair_score *a, const main_pair_score *b) {
    const double da[] = {a->alignment, a->fwd_pmi, a->rev_pmi, a->fwd_cond,
                         a->fwd_uncond, a->rev_cond, a->rev_uncond, a->ifd,
                         a->rifd, a->semantic, a->structural, a->intentional,
                         a->contrastive, a->fwd_pmi_total, a->rev_pmi_total};
    const double db[] = {b->alignment, b->fwd_pmi, b->rev_pmi, b->fwd_cond,
                         b->fwd_uncond, b->rev_cond, b->rev_uncond, b->ifd,
                         b->rifd, b->semantic, b->structural, b->intentional,
                         b->contrastive, b->fwd_pmi_total, b->rev_pmi_total};
    for (size_t i = 0; i < sizeof da / sizeof da[0]; i++)
        if (bits(da[i]) != bits(db[i]))
            return 0;
    return a->instruction_tokens == b->instruction_tokens &&
           a->response_tokens == b->response_tokens &&
           a->truncated == b->truncated;
}

static void print_score(size_t i, const main_pair_score *s) {
    printf("%zu %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64
           " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64
           " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64
           " %016" PRIx64 " %016" PRIx64 " %016" PRIx64
           " %" PRIu32 " %" PRIu32 " %" PRIu32 "\n",
           i, bits(s->alignment), bits(s->fwd_pmi), bits(s->rev_pmi),
           bits(s->fwd_cond), bits(s->fwd_uncond), bits(s->rev_cond),
           bits(s->rev_uncond), bits(s->ifd), bits(s->rifd),
           bits(s->semantic), bits(s->structural), bits(s->intentional),
           bits(s->contrastive), bits(s->fwd_pmi_total), bits(s->rev_pmi_total),
           s->instruction_tokens, s->response_tokens,
           s->truncated);
}

static main_scorer *new_scorer(const main_model *model, uint32_t max_tokens,
                               uint32_t negatives, uint32_t n_threads) {
    main_scorer_params params = main_scorer_default_params();
    params.max_tokens = max_tokens;
    params.negatives = negatives;
    params.n_threads = n_threads;
    main_scorer *scorer = NULL;
    if (main_scorer_new(model, NULL, &params, &scorer) != MAIN_OK)
        die("main_scorer_new");
    return scorer;
}

/* ---- errors ----------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static int run_errors(const char *model_path, const char *tmpdir) {
    char path[4096];
    main_model *model = (main_model *)&path; /* must be overwritten with NULL */

    CHECK(strlen(main_version()) > 0, "empty version");
    CHECK(strcmp(main_last_error(), "") == 0, "fresh thread has message '%s'",
          main_last_error());
    CHECK(strcmp(main_status_name(MAIN_ERR_FORMAT), "MAIN_ERR_FORMAT") == 0,
          "status name");
    CHECK(strcmp(main_status_name(99), "unknown main_status") == 0,
          "unknown status name");

    /* Loading: missing file, malformed files, unsupported architecture. */
    EXPECT_ERR(main_model_load("/nonexistent/dir/model.gguf", &model),
               MAIN_ERR_IO, "/nonexistent/dir/model.gguf");
    CHECK(model == NULL, "out not cleared on failure");

    snprintf(path, sizeof path, "%s/garbage.gguf", tmpdir);
    write_file(path, "this is not a GGUF file at all", 30);
    EXPECT_ERR(main_model_load(path, &model), MAIN_ERR_FORMAT, "GGUF");

    /* 12 bytes, "GGUF garbage": a damaged file, not an unsupported version. */
    snprintf(path, sizeof path, "%s/garbage12.gguf", tmpdir);
    write_file(path, "GGUF garbage", 12);
    EXPECT_ERR(main_model_load(path, &model), MAIN_ERR_FORMAT, "truncated");

    /* A GGUF header that promises more tensors than the file holds. */
    static const unsigned char truncated[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0,           /* magic, version 3 */
        5,   0,   0,   0,   0, 0, 0, 0,           /* 5 tensors */
        0,   0,   0,   0,   0, 0, 0, 0};          /* 0 metadata entries */
    snprintf(path, sizeof path, "%s/truncated.gguf", tmpdir);
    write_file(path, truncated, sizeof truncated);
    EXPECT_ERR(main_model_load(path, &model), MAIN_ERR_FORMAT, "malformed");

    /* A Hugging Face folder of an architecture the engine does not run. */
    snprintf(path, sizeof path, "%s/gpt2", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/gpt2/config.json", tmpdir);
    write_file(path, "{\"model_type\": \"gpt2\"}", 22);
    static const unsigned char empty_safetensors[] = {2, 0, 0, 0, 0, 0, 0, 0,
                                                      '{', '}'};
    snprintf(path, sizeof path, "%s/gpt2/model.safetensors", tmpdir);
    write_file(path, empty_safetensors, sizeof empty_safetensors);
    snprintf(path, sizeof path, "%s/gpt2", tmpdir);
    EXPECT_ERR(main_model_load(path, &model), MAIN_ERR_UNSUPPORTED, "gpt2");

    /* NULL and non-UTF-8 arguments. */
    EXPECT_ERR(main_model_load(NULL, &model), MAIN_ERR_INVALID_ARGUMENT,
               "'path': is NULL");
    EXPECT_ERR(main_model_load(model_path, NULL), MAIN_ERR_INVALID_ARGUMENT,
               "'out': is NULL");
    EXPECT_ERR(main_model_load("/tmp/\xff\xfe.gguf", &model),
               MAIN_ERR_INVALID_ARGUMENT, "'path': is not valid UTF-8");

    /* A successful call clears the message. */
    if (main_model_load(model_path, &model) != MAIN_OK)
        die("main_model_load");
    CHECK(strcmp(main_last_error(), "") == 0, "message after success: '%s'",
          main_last_error());
    CHECK(main_model_n_vocab(model) > 1000, "n_vocab %u",
          main_model_n_vocab(model));
    CHECK(main_model_n_vocab(NULL) == 0, "n_vocab(NULL)");

    /* Scorer parameters. */
    main_scorer *scorer = (main_scorer *)&path;
    main_scorer_params params = main_scorer_default_params();
    CHECK(params.n_threads == 0 && params.max_tokens == 1024 &&
              params.negatives == 0 && params.combine == MAIN_COMBINE_MIN &&
              params.precision <= MAIN_PRECISION_INT8,
          "default params");
    EXPECT_ERR(main_scorer_new(NULL, NULL, NULL, &scorer),
               MAIN_ERR_INVALID_ARGUMENT, "'forward': is NULL");
    CHECK(scorer == NULL, "scorer out not cleared on failure");
    EXPECT_ERR(main_scorer_new(model, NULL, NULL, NULL),
               MAIN_ERR_INVALID_ARGUMENT, "'out': is NULL");
    params.max_tokens = 4;
    EXPECT_ERR(main_scorer_new(model, NULL, &params, &scorer),
               MAIN_ERR_INVALID_ARGUMENT, "max_tokens");
    params = main_scorer_default_params();
    params.combine = 7;
    EXPECT_ERR(main_scorer_new(model, NULL, &params, &scorer),
               MAIN_ERR_INVALID_ARGUMENT, "params->combine");
    params = main_scorer_default_params();
    params.precision = 9;
    EXPECT_ERR(main_scorer_new(model, NULL, &params, &scorer),
               MAIN_ERR_INVALID_ARGUMENT, "params->precision");
    params = main_scorer_default_params();
    params.batch_tokens = 0;
    EXPECT_ERR(main_scorer_new(model, NULL, &params, &scorer),
               MAIN_ERR_INVALID_ARGUMENT, "batch_tokens");

    scorer = new_scorer(model, 32, 0, 1);
    main_pair_score s;
    memset(&s, 0x5a, sizeof s);
    main_pair_score untouched = s;
    EXPECT_ERR(main_score_pair(NULL, "a", "b", &s), MAIN_ERR_INVALID_ARGUMENT,
               "'scorer': is NULL");
    EXPECT_ERR(main_score_pair(scorer, NULL, "b", &s),
               MAIN_ERR_INVALID_ARGUMENT, "'instruction': is NULL");
    EXPECT_ERR(main_score_pair(scorer, "a", NULL, &s),
               MAIN_ERR_INVALID_ARGUMENT, "'response': is NULL");
    EXPECT_ERR(main_score_pair(scorer, "a", "b", NULL),
               MAIN_ERR_INVALID_ARGUMENT, "'out': is NULL");
    EXPECT_ERR(main_score_pair(scorer, "caf\xc3", "b", &s),
               MAIN_ERR_INVALID_ARGUMENT, "'instruction': is not valid UTF-8");
    EXPECT_ERR(main_score_pair(scorer, "a", "\x80 oops", &s),
               MAIN_ERR_INVALID_ARGUMENT, "'response': is not valid UTF-8");
    CHECK(same_score(&s, &untouched), "out written on failure");

    const char *xs[] = {"Say hi.", "Count to three.", "Name a color."};
    const char *ys[] = {"Hi!", "One, two, three.", "\xff"};
    const char *ys_null[] = {"Hi!", NULL, "Blue."};
    const char *ys_ok[] = {"Hi!", "One, two, three.", "Blue."};
    main_pair_score batch[3];
    EXPECT_ERR(main_score_batch(scorer, xs, ys, 3, batch),
               MAIN_ERR_INVALID_ARGUMENT, "'responses[2]': is not valid UTF-8");
    EXPECT_ERR(main_score_batch(scorer, xs, ys_null, 3, batch),
               MAIN_ERR_INVALID_ARGUMENT, "'responses[1]': is NULL");
    EXPECT_ERR(main_score_batch(scorer, NULL, ys, 3, batch),
               MAIN_ERR_INVALID_ARGUMENT, "'instructions': is NULL");
    EXPECT_ERR(main_score_batch(scorer, xs, ys, 3, NULL),
               MAIN_ERR_INVALID_ARGUMENT, "'out': is NULL");
    CHECK(main_score_batch(scorer, NULL, NULL, 0, NULL) == MAIN_OK,
          "empty batch: %s", main_last_error());

    /* Negatives need a batch of at least K + 1 pairs. */
    main_scorer *contrast = new_scorer(model, 32, 2, 1);
    EXPECT_ERR(main_score_batch(contrast, xs, ys_ok, 2, batch),
               MAIN_ERR_INVALID_ARGUMENT, "negatives");
    EXPECT_ERR(main_score_pair(contrast, "a", "b", &s),
               MAIN_ERR_INVALID_ARGUMENT, "negatives");
    CHECK(main_score_batch(contrast, xs, ys_ok, 3, batch) == MAIN_OK,
          "3 pairs, 2 negatives: %s", main_last_error());
    CHECK(isfinite(batch[0].contrastive), "contrastive %g", batch[0].contrastive);
    main_scorer_free(contrast);

    /* Detail and text log-probs. */
    main_pair_detail *detail = (main_pair_detail *)&path;
    EXPECT_ERR(main_score_pair_detail(scorer, "a", "b", &s, NULL),
               MAIN_ERR_INVALID_ARGUMENT, "'out_detail': is NULL");
    EXPECT_ERR(main_score_pair_detail(scorer, "a", "\xc0\xaf", &s, &detail),
               MAIN_ERR_INVALID_ARGUMENT, "'response': is not valid UTF-8");
    CHECK(detail == NULL, "detail out not cleared on failure");
    main_text_logprobs *lps = (main_text_logprobs *)&path;
    EXPECT_ERR(main_text_logprobs_new(NULL, "x", 1, MAIN_PRECISION_FAST, &lps),
               MAIN_ERR_INVALID_ARGUMENT, "'model': is NULL");
    CHECK(lps == NULL, "logprobs out not cleared on failure");
    EXPECT_ERR(main_text_logprobs_new(model, NULL, 1, MAIN_PRECISION_FAST, &lps),
               MAIN_ERR_INVALID_ARGUMENT, "'text': is NULL");
    EXPECT_ERR(main_text_logprobs_new(model, "ok \xe2\x82", 1,
                                      MAIN_PRECISION_FAST, &lps),
               MAIN_ERR_INVALID_ARGUMENT, "'text': is not valid UTF-8");
    EXPECT_ERR(main_text_logprobs_new(model, "x", 1, 42, &lps),
               MAIN_ERR_INVALID_ARGUMENT, "'precision': 42 is not one of");
    /* Text log-probs run on the CPU, which has no bf16: refused, as by the
       scorer, not run in exact in its place. */
    EXPECT_ERR(main_text_logprobs_new(model, "x", 1, MAIN_PRECISION_BF16, &lps),
               MAIN_ERR_INVALID_ARGUMENT,
               "'precision': bf16 does not run on cpu");
    EXPECT_ERR(main_text_logprobs_new(model, "x", 1, MAIN_PRECISION_FAST, NULL),
               MAIN_ERR_INVALID_ARGUMENT, "'out': is NULL");

    /* The scoring job: each argument checked and named, a missing input an
       I/O error, a bad record named by its file and line (the record
       before it written), skip_invalid going on past it. */
    char job_in[4096], job_out[4096];
    static const char job_text[] = "{\"instruction\": \"Say hi.\", \"output\": \"Hi!\"}\n"
                                   "{\"instruction\": \"x\"}\n";
    snprintf(job_in, sizeof job_in, "%s/job.jsonl", tmpdir);
    snprintf(job_out, sizeof job_out, "%s/job-out.jsonl", tmpdir);
    write_file(job_in, job_text, sizeof job_text - 1);
    remove(job_out);
    main_job_params jp = main_job_default_params();
    main_job_report report;
    EXPECT_ERR(main_score_jsonl(NULL, NULL, NULL, NULL), MAIN_ERR_INVALID_ARGUMENT,
               "'params': is NULL");
    jp.input = job_in;
    jp.output = job_out;
    EXPECT_ERR(main_score_jsonl(&jp, NULL, NULL, NULL), MAIN_ERR_INVALID_ARGUMENT,
               "'params->model': is NULL");
    jp.model = model_path;
    jp.negatives = 16;
    EXPECT_ERR(main_score_jsonl(&jp, NULL, NULL, NULL), MAIN_ERR_INVALID_ARGUMENT,
               "--batch must be above it");
    jp.negatives = 0;
    jp.combine = 7;
    EXPECT_ERR(main_score_jsonl(&jp, NULL, NULL, NULL), MAIN_ERR_INVALID_ARGUMENT,
               "'params->combine': 7 is not one of");
    jp.combine = MAIN_COMBINE_MIN;
    jp.input = "/nonexistent/job.jsonl";
    EXPECT_ERR(main_score_jsonl(&jp, NULL, NULL, NULL), MAIN_ERR_IO, "/nonexistent/job.jsonl");
    jp.input = job_in;
    EXPECT_ERR(main_score_jsonl(&jp, NULL, NULL, &report), MAIN_ERR_INVALID_ARGUMENT,
               "job.jsonl, line 2: missing field 'output'");
    jp.skip_invalid = true;
    CHECK(main_score_jsonl(&jp, NULL, NULL, &report) == MAIN_OK, "skip_invalid: %s",
          main_last_error());
    CHECK(report.resumed == 1 && report.invalid == 1 && report.records == 1 &&
              report.scored_now == 0 && report.kept == -1 && !report.stopped,
          "report: resumed %zu invalid %zu records %zu", report.resumed, report.invalid,
          report.records);

    /* Freeing NULL is a no-op, for every free function. */
    main_model_free(NULL);
    main_scorer_free(NULL);
    main_pair_detail_free(NULL);
    main_text_logprobs_free(NULL);

    /* The scorer keeps its own reference: free the model first. */
    main_model_free(model);
    CHECK(main_score_pair(scorer, "Say hi.", "Hi!", &s) == MAIN_OK,
          "scorer after model free: %s", main_last_error());
    CHECK(s.response_tokens > 0 && isfinite(s.alignment), "score after free");
    main_scorer_free(scorer);

    printf("errors: %d failures\n", failures);
    return failures != 0;
}

/* ---- scores ----------------------------------------------------------- */

static int run_scores(const char *model_path, const char *pairs_path,
                      uint32_t max_tokens, uint32_t negatives,
                      uint32_t n_threads) {
    pairs p = read_pairs(pairs_path);
    main_model *model = NULL;
    if (main_model_load(model_path, &model) != MAIN_OK)
        die("main_model_load");
    main_scorer *scorer = new_scorer(model, max_tokens, negatives, n_threads);
    main_pair_score *out = calloc(p.n, sizeof *out);
    if (main_score_batch(scorer, p.instructions, p.responses, p.n, out) !=
        MAIN_OK)
        die("main_score_batch");
    for (size_t i = 0; i < p.n; i++)
        print_score(i, &out[i]);
    free(out);
    main_scorer_free(scorer);
    main_model_free(model);
    free_pairs(&p);
    return 0;
}

/* ---- threads ---------------------------------------------------------- */

typedef struct job {
    const main_model *model;
    const pairs *p;
    uint32_t max_tokens;
    size_t offset; /* each thread starts at a different pair */
    main_pair_score *out;
    int failed;
    char error[512];
} job;

static void *thread_main(void *arg) {
    job *j = arg;
    main_scorer_params params = main_scorer_default_params();
    params.max_tokens = j->max_tokens;
    params.n_threads = 1;
    main_scorer *scorer = NULL;
    if (main_scorer_new(j->model, NULL, &params, &scorer) != MAIN_OK) {
        snprintf(j->error, sizeof j->error, "scorer: %s", main_last_error());
        j->failed = 1;
        return NULL;
    }
    for (size_t k = 0; k < j->p->n; k++) {
        size_t i = (k + j->offset) % j->p->n;
        if (main_score_pair(scorer, j->p->instructions[i], j->p->responses[i],
                            &j->out[i]) != MAIN_OK) {
            snprintf(j->error, sizeof j->error, "pair %zu: %s", i,
                     main_last_error());
            j->failed = 1;
            break;
        }
        /* Each thread has its own last error, untouched by the others. */
        if (main_score_pair(scorer, NULL, "x", &j->out[i]) !=
                MAIN_ERR_INVALID_ARGUMENT ||
            strstr(main_last_error(), "'instruction'") == NULL) {
            snprintf(j->error, sizeof j->error, "per-thread error: '%s'",
                     main_last_error());
            j->failed = 1;
            break;
        }
    }
    main_scorer_free(scorer);
    return NULL;
}

static int run_threads(const char *model_path, const char *pairs_path,
                       uint32_t max_tokens, size_t n_threads) {
    pairs p = read_pairs(pairs_path);
    main_model *model = NULL;
    if (main_model_load(model_path, &model) != MAIN_OK)
        die("main_model_load");

    /* The reference: one thread, one scorer. */
    main_pair_score *want = calloc(p.n, sizeof *want);
    job ref = {model, &p, max_tokens, 0, want, 0, {0}};
    thread_main(&ref);
    CHECK(!ref.failed, "one thread: %s", ref.error);

    job *jobs = calloc(n_threads, sizeof *jobs);
    pthread_t *tids = calloc(n_threads, sizeof *tids);
    for (size_t t = 0; t < n_threads; t++) {
        jobs[t] = (job){model, &p, max_tokens, t, calloc(p.n, sizeof(main_pair_score)), 0, {0}};
        CHECK(pthread_create(&tids[t], NULL, thread_main, &jobs[t]) == 0,
              "pthread_create %zu", t);
    }
    for (size_t t = 0; t < n_threads; t++) {
        pthread_join(tids[t], NULL);
        CHECK(!jobs[t].failed, "thread %zu: %s", t, jobs[t].error);
        for (size_t i = 0; i < p.n; i++)
            CHECK(same_score(&jobs[t].out[i], &want[i]),
                  "thread %zu pair %zu: alignment %.17g, one thread %.17g", t,
                  i, jobs[t].out[i].alignment, want[i].alignment);
        free(jobs[t].out);
    }
    for (size_t i = 0; i < p.n; i++)
        print_score(i, &want[i]);
    printf("threads: %zu threads x %zu pairs, %d failures\n", n_threads, p.n,
           failures);
    free(jobs);
    free(tids);
    free(want);
    main_model_free(model);
    free_pairs(&p);
    return failures != 0;
}

/* ---- detail ----------------------------------------------------------- */

static double mean_cond(const main_token_score *t, size_t n, int uncond) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += uncond ? t[i].uncond : t[i].cond;
    return n ? sum / (double)n : 0.0;
}

static int run_detail(const char *model_path, const char *pairs_path,
                      const char *text_path) {
    pairs p = read_pairs(pairs_path);
    main_model *model = NULL;
    if (main_model_load(model_path, &model) != MAIN_OK)
        die("main_model_load");
    main_scorer *scorer = new_scorer(model, 64, 0, 1);
    for (size_t i = 0; i < p.n; i++) {
        main_pair_score s, plain;
        main_pair_detail *d = NULL;
        if (main_score_pair_detail(scorer, p.instructions[i], p.responses[i],
                                   &s, &d) != MAIN_OK)
            die("main_score_pair_detail");
        if (main_score_pair(scorer, p.instructions[i], p.responses[i],
                            &plain) != MAIN_OK)
            die("main_score_pair");
        CHECK(same_score(&s, &plain), "detail changed the scores");
        CHECK(d->n_response == s.response_tokens, "%zu response tokens, score says %u",
              d->n_response, s.response_tokens);
        CHECK(d->n_instruction == s.instruction_tokens,
              "%zu instruction tokens, score says %u", d->n_instruction,
              s.instruction_tokens);
        /* The view means are the means of the per-token values. */
        CHECK(fabs(mean_cond(d->response, d->n_response, 0) - s.fwd_cond) < 1e-12,
              "fwd_cond");
        CHECK(fabs(mean_cond(d->response, d->n_response, 1) - s.fwd_uncond) < 1e-12,
              "fwd_uncond");
        CHECK(fabs(mean_cond(d->instruction, d->n_instruction, 0) - s.rev_cond) < 1e-12,
              "rev_cond");
        CHECK(fabs(mean_cond(d->instruction, d->n_instruction, 1) - s.rev_uncond) < 1e-12,
              "rev_uncond");
        for (size_t k = 0; k < d->n_response; k++) {
            const main_token_score *t = &d->response[k];
            CHECK(strlen(t->text) == t->text_len, "text_len");
            CHECK(t->pmi == t->cond - t->uncond, "pmi");
            CHECK(t->cond <= 0.0 && t->uncond <= 0.0, "log-probs above 0");
        }
        main_pair_detail_free(d);
    }

    /* Text log-probs: print them for the Rust side to compare. */
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        perror(text_path);
        return 2;
    }
    char text[65536];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    main_text_logprobs *lp = NULL;
    if (main_text_logprobs_new(model, text, 1, MAIN_PRECISION_FAST, &lp) !=
        MAIN_OK)
        die("main_text_logprobs_new");
    CHECK(lp->n_tokens > 1, "%zu tokens", lp->n_tokens);
    CHECK(isnan(lp->tokens[0].logprob), "first token has a log-prob");
    /* The tokens' bytes spell the text (after a BOS token, if any). */
    size_t total = 0;
    for (size_t i = 0; i < lp->n_tokens; i++)
        total += lp->tokens[i].text_len;
    char *joined = malloc(total + 1);
    size_t at = 0;
    for (size_t i = 0; i < lp->n_tokens; i++) {
        memcpy(joined + at, lp->tokens[i].text, lp->tokens[i].text_len);
        at += lp->tokens[i].text_len;
    }
    CHECK(total >= len && memcmp(joined + total - len, text, len) == 0,
          "tokens do not spell the text");
    free(joined);
    for (size_t i = 0; i < lp->n_tokens; i++)
        printf("token %zu %" PRIu32 " %016" PRIx64 "\n", i, lp->tokens[i].id,
               bits(lp->tokens[i].logprob));
    printf("perplexity %016" PRIx64 "\n", bits(lp->perplexity));
    main_text_logprobs_free(lp);

    main_scorer_free(scorer);
    main_model_free(model);
    free_pairs(&p);
    printf("detail: %d failures\n", failures);
    return failures != 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "errors") == 0)
        return run_errors(argv[2], argv[3]);
    if (argc >= 7 && strcmp(argv[1], "scores") == 0)
        return run_scores(argv[2], argv[3], (uint32_t)atoi(argv[4]),
                          (uint32_t)atoi(argv[5]), (uint32_t)atoi(argv[6]));
    if (argc >= 6 && strcmp(argv[1], "threads") == 0)
        return run_threads(argv[2], argv[3], (uint32_t)atoi(argv[4]),
                           (size_t)atoi(argv[5]));
    if (argc >= 5 && strcmp(argv[1], "detail") == 0)
        return run_detail(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: see the comment at the top of tests/c/test_main.c\n");
    return 2;
}
