/*
 * Replays a fuzz target (fuzz/fuzz_<name>.c, linked here without libFuzzer) over
 * every file of the directories given as arguments (--min N: fail unless at least N
 * inputs were found). An invariant failure aborts the input's test.
 */
#include "suite.h"

#include <check.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUTS 2048

static char *inputs[MAX_INPUTS];
static int ninputs;
/* The fewest inputs the corpus must hold (--min N), so a lost corpus fails loudly. */
static int min_inputs = 1;

KSFT_LOOP_TEST(test_fuzz_replay_input, 60, ninputs)
{
    FILE *f = fopen(inputs[_i], "rb");
    ck_assert_msg(f != NULL, "cannot open %s", inputs[_i]);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    ck_assert_msg(feof(f), "%s: larger than 1 MiB", inputs[_i]);
    fclose(f);
    /* an exact-size copy, so ASan sees reads past the input's end */
    uint8_t *copy = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, buf, n);
    ck_assert_int_eq(LLVMFuzzerTestOneInput(copy, n), 0);
    free(copy);
}
END_TEST

KSFT_TEST(test_fuzz_replay_corpus_present, 60)
{
    ck_assert_int_ge(ninputs, min_inputs);
}
END_TEST

static void
collect(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cannot open %s\n", dir);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && ninputs < MAX_INPUTS) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        inputs[ninputs++] = strdup(path);
    }
    closedir(d);
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--min") && i + 1 < argc) {
            min_inputs = atoi(argv[++i]);
        } else {
            collect(argv[i]);
        }
    }
    int rc = ksft_main("fuzz_replay");
    for (int i = 0; i < ninputs; i++) {
        free(inputs[i]);
    }
    return rc;
}
