/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The canary of valgrind.unit (tests/valgrind/run.sh): a program with one known defect, chosen by
 * its argument, that the runner must see reported before it trusts a clean result.
 *   leak      a block that is definitely lost (and one indirectly lost through it)
 *   overread  a read one byte past the end of a heap block
 *   forkleak  a forked child leaks a block and exits 0 (as a test case under CK_FORK=yes)
 *   clean     nothing wrong (must pass)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "clean";
    if (strcmp(what, "leak") == 0) {
        char **outer = malloc(sizeof *outer);
        *outer = malloc(32);
        snprintf(*outer, 32, "lost");
        printf("%s\n", *outer);
        outer = NULL; /* both blocks are now unreachable */
        return 0;
    }
    if (strcmp(what, "overread") == 0) {
        volatile char *p = malloc(16);
        memset((char *)p, 'x', 16);
        int c = p[strlen(what) + 8]; /* "overread": 16, one past the end */
        printf("%d\n", c & 1);
        free((char *)p);
        return 0;
    }
    if (strcmp(what, "forkleak") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            char *p = malloc(48);
            snprintf(p, 48, "child");
            puts(p);
            p = NULL;
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? 0 : 2;
    }
    return 0;
}
