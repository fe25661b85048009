/* A small program with two real heap bugs, recorded into uaf.mtrace so that
 * `mtesim replay workloads/uaf.mtrace` shows MTE catching them:
 *
 *   1. a use after free: a session is closed (freed) and its id is read
 *      through the stale pointer afterwards;
 *   2. a heap overflow: a 32-byte name buffer is written one byte past its
 *      end (into the next granule, which MTE tags apart).
 *
 * On x86 both go unnoticed: the program prints its result and exits 0.
 * Built with `cc -O0 -g` by make.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct session {
    long id;
    char user[24];
};

static struct session *open_session(long id, const char *user)
{
    struct session *s = malloc(sizeof *s);
    s->id = id;
    snprintf(s->user, sizeof s->user, "%s", user);
    return s;
}

static void close_session(struct session *s)
{
    free(s);
}

int main(void)
{
    struct session *sessions[4];
    const char *users[4] = { "alice", "bob", "carol", "dave" };
    for (int i = 0; i < 4; i++)
        sessions[i] = open_session(100 + i, users[i]);

    close_session(sessions[1]);
    /* Bug 1: the stale pointer is still used after the session closed. */
    volatile long stale = sessions[1]->id;

    char *name = malloc(32);
    memset(name, 'x', 32);
    /* Bug 2: a terminator written one past the end of the buffer. */
    name[32] = '\0';

    long sum = stale;
    for (int i = 0; i < 4; i++)
        if (i != 1)
            sum += sessions[i]->id;
    printf("sum %ld\n", sum);
    free(name);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            close_session(sessions[i]);
    return 0;
}
