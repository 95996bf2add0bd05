/*
 * score_jsonl: scores a JSONL file of instruction/response pairs with
 * libmain and prints each record with an added "alignment" object, like
 * `main-score score` does.
 *
 *   score_jsonl MODEL INPUT.jsonl [BATCH]      (INPUT "-" reads stdin)
 *
 * Records are Alpaca ("instruction", "input", "output") or
 * "prompt"/"response". The instruction is Alpaca's instruction plus, when
 * "input" is not empty, "\n\n" and the input (DESIGN.md section 2).
 *
 * The JSON reader below is deliberately tiny: it walks one top-level object
 * per line, decodes string values (all escapes, \uXXXX with surrogate pairs)
 * and skips every other value. Its limits: one object per line, no
 * validation beyond what it needs (it accepts some malformed JSON), and
 * "\u0000" inside a string ends that string early (C strings). Use a real
 * JSON library in production code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <main.h>

/* ---- a tiny JSON reader ------------------------------------------------- */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static char *put_utf8(char *o, unsigned long c) {
    if (c < 0x80) {
        *o++ = (char)c;
    } else if (c < 0x800) {
        *o++ = (char)(0xc0 | (c >> 6));
        *o++ = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        *o++ = (char)(0xe0 | (c >> 12));
        *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *o++ = (char)(0x80 | (c & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (c >> 18));
        *o++ = (char)(0x80 | ((c >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *o++ = (char)(0x80 | (c & 0x3f));
    }
    return o;
}

static int hex4(const char *p, unsigned long *out) {
    unsigned long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned long)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned long)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Parses the string at p (at its opening quote). Returns the position after
 * the closing quote, or NULL; *out (malloc'd, decoded) when out != NULL. */
static const char *parse_string(const char *p, char **out) {
    if (*p != '"')
        return NULL;
    p++;
    /* Decoded text is never longer than the escaped text. */
    size_t cap = strlen(p) + 1;
    char *buf = out ? malloc(cap) : NULL;
    char *o = buf;
    while (*p && *p != '"') {
        unsigned long c;
        if (*p != '\\') {
            if (o) *o++ = *p;
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u':
            if (!hex4(p + 1, &c)) goto fail;
            p += 4;
            if (c >= 0xd800 && c < 0xdc00 && p[1] == '\\' && p[2] == 'u') {
                unsigned long lo;
                if (hex4(p + 3, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                    c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            break;
        default:
            goto fail;
        }
        p++;
        if (o) o = put_utf8(o, c);
    }
    if (*p != '"')
        goto fail;
    if (o) {
        *o = 0;
        *out = buf;
    }
    return p + 1;
fail:
    free(buf);
    return NULL;
}

/* Skips any JSON value; returns the position after it, or NULL. */
static const char *skip_value(const char *p) {
    p = skip_ws(p);
    if (*p == '"')
        return parse_string(p, NULL);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = parse_string(p, NULL);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    /* number, true, false, null */
    const char *start = p;
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
           *p != '\t' && *p != '\r' && *p != '\n')
        p++;
    return p > start ? p : NULL;
}

typedef struct record {
    char *instruction, *input, *output, *prompt, *response;
} record;

static void free_record(record *r) {
    free(r->instruction);
    free(r->input);
    free(r->output);
    free(r->prompt);
    free(r->response);
    memset(r, 0, sizeof *r);
}

/* Reads the string fields we need from one top-level object. 0 on success. */
static int parse_record(const char *line, record *r) {
    memset(r, 0, sizeof *r);
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return -1;
    p = skip_ws(p);
    if (*p == '}')
        return 0;
    for (;;) {
        char *key = NULL;
        p = parse_string(skip_ws(p), &key);
        if (!p) return -1;
        p = skip_ws(p);
        if (*p++ != ':') { free(key); return -1; }
        p = skip_ws(p);
        char **slot = NULL;
        if (!strcmp(key, "instruction")) slot = &r->instruction;
        else if (!strcmp(key, "input")) slot = &r->input;
        else if (!strcmp(key, "output")) slot = &r->output;
        else if (!strcmp(key, "prompt")) slot = &r->prompt;
        else if (!strcmp(key, "response")) slot = &r->response;
        free(key);
        if (slot && *p == '"') {
            free(*slot);
            *slot = NULL;
            p = parse_string(p, slot);
        } else {
            p = skip_value(p);
        }
        if (!p) return -1;
        p = skip_ws(p);
        if (*p == ',') { p++; continue; }
        if (*p == '}') return 0;
        return -1;
    }
}

/* The pair of a record (malloc'd strings), or -1 when it has none. */
static int record_pair(const record *r, char **x, char **y) {
    if (r->instruction && r->output) {
        const char *in = r->input ? r->input : "";
        size_t n = strlen(r->instruction) + 2 + strlen(in) + 1;
        *x = malloc(n);
        if (*in)
            snprintf(*x, n, "%s\n\n%s", r->instruction, in);
        else
            snprintf(*x, n, "%s", r->instruction);
        *y = strdup(r->output);
        return 0;
    }
    if (r->prompt && r->response) {
        *x = strdup(r->prompt);
        *y = strdup(r->response);
        return 0;
    }
    return -1;
}

/* ---- scoring ---------------------------------------------------------- */

/* JSON has no NaN: a score that is not a number is written as null. */
static void put_number(const char *name, double v, int last) {
    if (v != v)
        printf("\"%s\": null%s", name, last ? "" : ", ");
    else
        printf("\"%s\": %.17g%s", name, v, last ? "" : ", ");
}

/* The record's line with "alignment" added as its last field. */
static void print_scored(const char *line, const main_pair_score *s) {
    const char *end = strrchr(line, '}');
    const char *p = end - 1;
    while (p > line && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p--;
    int empty = *p == '{';
    printf("%.*s%s\"alignment\": {", (int)(end - line), line, empty ? "" : ", ");
    put_number("alignment", s->alignment, 0);
    put_number("fwd_pmi", s->fwd_pmi, 0);
    put_number("rev_pmi", s->rev_pmi, 0);
    put_number("fwd_cond", s->fwd_cond, 0);
    put_number("fwd_uncond", s->fwd_uncond, 0);
    put_number("rev_cond", s->rev_cond, 0);
    put_number("rev_uncond", s->rev_uncond, 0);
    put_number("ifd", s->ifd, 0);
    put_number("rifd", s->rifd, 0);
    put_number("semantic", s->semantic, 0);
    put_number("structural", s->structural, 0);
    put_number("intentional", s->intentional, 0);
    put_number("fwd_pmi_total", s->fwd_pmi_total, 0);
    put_number("rev_pmi_total", s->rev_pmi_total, 0);
    put_number("contrastive", s->contrastive, 0);
    printf("\"instruction_tokens\": %u, \"response_tokens\": %u, \"truncated\": %s}}\n",
           s->instruction_tokens, s->response_tokens, s->truncated ? "true" : "false");
}

typedef struct batch {
    size_t n, cap;
    char **lines, **instructions, **responses;
} batch;

static int flush(main_scorer *scorer, batch *b) {
    if (b->n == 0)
        return 0;
    main_pair_score *scores = calloc(b->n, sizeof *scores);
    main_status st = main_score_batch(scorer, (const char *const *)b->instructions,
                                      (const char *const *)b->responses, b->n, scores);
    if (st != MAIN_OK) {
        fprintf(stderr, "score_jsonl: %s: %s\n", main_status_name(st), main_last_error());
        free(scores);
        return -1;
    }
    for (size_t i = 0; i < b->n; i++) {
        print_scored(b->lines[i], &scores[i]);
        free(b->lines[i]);
        free(b->instructions[i]);
        free(b->responses[i]);
    }
    free(scores);
    b->n = 0;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL INPUT.jsonl [BATCH]   (libmain %s)\n", argv[0],
                main_version());
        return 2;
    }
    size_t batch_size = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 16;
    if (batch_size == 0)
        batch_size = 1;
    FILE *in = strcmp(argv[2], "-") ? fopen(argv[2], "r") : stdin;
    if (!in) {
        perror(argv[2]);
        return 1;
    }

    main_model *model = NULL;
    main_status st = main_model_load(argv[1], &model);
    if (st != MAIN_OK) {
        fprintf(stderr, "score_jsonl: %s: %s\n", main_status_name(st), main_last_error());
        return 1;
    }
    main_scorer_params params = main_scorer_default_params();
    main_scorer *scorer = NULL;
    st = main_scorer_new(model, NULL, &params, &scorer);
    if (st != MAIN_OK) {
        fprintf(stderr, "score_jsonl: %s: %s\n", main_status_name(st), main_last_error());
        main_model_free(model);
        return 1;
    }

    batch b = {0, batch_size, NULL, NULL, NULL};
    b.lines = calloc(batch_size, sizeof *b.lines);
    b.instructions = calloc(batch_size, sizeof *b.instructions);
    b.responses = calloc(batch_size, sizeof *b.responses);
    char *line = NULL;
    size_t line_cap = 0;
    long line_no = 0;
    int rc = 0;
    while (getline(&line, &line_cap, in) != -1) {
        line_no++;
        if (*skip_ws(line) == 0)
            continue;
        record r;
        char *x = NULL, *y = NULL;
        if (parse_record(line, &r) != 0 || record_pair(&r, &x, &y) != 0 ||
            !strrchr(line, '}')) {
            fprintf(stderr,
                    "score_jsonl: line %ld: not a JSON object with instruction/output "
                    "or prompt/response strings\n",
                    line_no);
            free_record(&r);
            rc = 1;
            break;
        }
        free_record(&r);
        line[strcspn(line, "\r\n")] = 0;
        b.lines[b.n] = strdup(line);
        b.instructions[b.n] = x;
        b.responses[b.n] = y;
        if (++b.n == b.cap && flush(scorer, &b) != 0) {
            rc = 1;
            break;
        }
    }
    if (rc == 0 && flush(scorer, &b) != 0)
        rc = 1;
    for (size_t i = 0; i < b.n; i++) {
        free(b.lines[i]);
        free(b.instructions[i]);
        free(b.responses[i]);
    }
    free(b.lines);
    free(b.instructions);
    free(b.responses);
    free(line);
    if (in != stdin)
        fclose(in);
    main_scorer_free(scorer);
    main_model_free(model);
    return rc;
}
