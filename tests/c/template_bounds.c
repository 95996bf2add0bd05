/*
 * A chat template bounded in memory, from C (issue 21): driven by
 * ffi/tests/template_bounds.rs, natively and under valgrind.
 *
 *   template_bounds MODEL...   each MODEL is a GGUF whose chat template
 *                              runs away; main_model_load must refuse it
 *
 * For each model prints one line
 *   RESULT <status name> <milliseconds> <message>
 * and at the end
 *   PEAK <bytes>               this process's peak resident memory (VmHWM)
 * Exit status 0 when every load was refused with a message; 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "main.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* VmHWM of /proc/self/status in bytes; 0 where there is none. */
static long long peak_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

int main(int argc, char **argv) {
    int failures = 0;
    for (int i = 1; i < argc; i++) {
        main_model *model = NULL;
        double start = now_ms();
        main_status st = main_model_load(argv[i], &model);
        double ms = now_ms() - start;
        const char *msg = main_last_error();
        printf("RESULT %s %.0f %s\n", main_status_name((int)st), ms,
               msg ? msg : "(no message)");
        if (st == MAIN_OK || model != NULL || msg == NULL || msg[0] == '\0') {
            fprintf(stderr, "FAIL %s: loaded, or refused without a message\n",
                    argv[i]);
            failures++;
        }
        if (model)
            main_model_free(model);
    }
    printf("PEAK %lld\n", peak_bytes());
    return failures ? 1 : 0;
}
