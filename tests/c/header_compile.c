/*
 * Compiled as C11 and as C++17 with -Wall -Wextra -Werror -pedantic by
 * ffi/tests/c_abi.rs: main.h must be usable from both languages. Valid C and
 * valid C++ at once, so no designated initializers and no C++-only syntax.
 */
#include "main.h"

#include <stdio.h>

/* Every type and function of the header, referenced once. */
int use_every_declaration(const char *path);

int use_every_declaration(const char *path) {
    main_model *model = NULL;
    main_scorer *scorer = NULL;
    main_scorer_params params = main_scorer_default_params();
    main_pair_score score;
    main_pair_detail *detail = NULL;
    main_text_logprobs *logprobs = NULL;
    const char *instructions[1] = {"Say hi."};
    const char *responses[1] = {"Hi!"};
    main_status status;

    params.combine = MAIN_COMBINE_SOFTMIN;
    params.precision = MAIN_PRECISION_EXACT;
    status = main_model_load(path, &model);
    if (status != MAIN_OK) {
        fprintf(stderr, "%s: %s (%s)\n", main_version(), main_last_error(),
                main_status_name(status));
        return 1;
    }
    if (main_scorer_new(model, NULL, &params, &scorer) == MAIN_OK &&
        main_score_pair(scorer, "a", "b", &score) == MAIN_OK &&
        main_score_batch(scorer, instructions, responses, 1, &score) == MAIN_OK &&
        main_score_pair_detail(scorer, "a", "b", &score, &detail) == MAIN_OK &&
        detail->n_response > 0) {
        const main_token_score *t = &detail->response[0];
        printf("%u %s %zu %f\n", t->id, t->text, t->text_len, t->pmi);
    }
    if (main_text_logprobs_new(model, "text", 0, MAIN_PRECISION_INT8, &logprobs) == MAIN_OK) {
        const main_text_token *t = &logprobs->tokens[0];
        printf("%u %f %f %u\n", t->id, t->logprob, logprobs->perplexity,
               main_model_n_vocab(model));
    }
    main_text_logprobs_free(logprobs);
    main_pair_detail_free(detail);
    main_scorer_free(scorer);
    main_model_free(model);
    return status == MAIN_ERR_INVALID_ARGUMENT || status == MAIN_ERR_IO ||
           status == MAIN_ERR_FORMAT || status == MAIN_ERR_UNSUPPORTED ||
           status == MAIN_ERR_OUT_OF_MEMORY || status == MAIN_ERR_INTERNAL;
}
