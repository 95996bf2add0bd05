/*
 * score_jsonl: scores a JSONL file with libmain's scoring job and writes
 * each record with an added "alignment" object: the same bytes
 * `main-score score` and Python's main_align.score_jsonl write.
 *
 *   score_jsonl MODEL INPUT.jsonl [BATCH [OUTPUT.jsonl]]
 *
 * INPUT "-" reads stdin; OUTPUT defaults to "-", stdout. Records are
 * Alpaca, prompt/response, OpenAI "messages" or ShareGPT "conversations",
 * detected per record. With an OUTPUT file the job is resumable: run the
 * same command again after an interruption and it goes on after the last
 * complete record.
 */
#include <stdio.h>
#include <stdlib.h>

#include <main.h>

/* Progress on stderr: one line per written batch. Returning true goes on. */
static bool progress(const main_job_event *event, void *user_data) {
    const char *output = user_data;
    switch (event->kind) {
    case MAIN_JOB_RESUMING:
        fprintf(stderr, "score_jsonl: %s: resuming after %zu records\n", output, event->records);
        break;
    case MAIN_JOB_SCORED:
        if (event->total >= 0)
            fprintf(stderr, "score_jsonl: %zu/%lld records\n", event->done, (long long)event->total);
        else
            fprintf(stderr, "score_jsonl: %zu records\n", event->done);
        break;
    default:
        break;
    }
    return true;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL INPUT.jsonl [BATCH [OUTPUT.jsonl]]\n", argv[0]);
        return 2;
    }
    main_job_params params = main_job_default_params();
    params.model = argv[1];
    params.input = argv[2];
    params.output = argc > 4 ? argv[4] : "-";
    if (argc > 3) {
        char *end = NULL;
        long batch = strtol(argv[3], &end, 10);
        if (*argv[3] == '\0' || *end != '\0' || batch < 1 || batch > 1000000) {
            fprintf(stderr, "score_jsonl: BATCH '%s' is not a whole number from 1 to 1000000\n", argv[3]);
            return 2;
        }
        params.batch = (uint32_t)batch;
    }
    main_job_report report;
    main_status st = main_score_jsonl(&params, progress, (void *)params.output, &report);
    if (st != MAIN_OK) {
        fprintf(stderr, "score_jsonl: %s: %s\n", main_status_name(st), main_last_error());
        return 1;
    }
    fprintf(stderr, "score_jsonl: %zu records (%zu scored now, %zu from before), %zu invalid skipped\n",
            report.records, report.scored_now, report.resumed, report.invalid);
    return 0;
}
