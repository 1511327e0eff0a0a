/* An exec storm: `/bin/true` run at a fixed rate (or as fast as possible)
 * for a fixed time, by one worker per CPU. Prints the execs done and the
 * achieved rate. Used by bench/exec-storm.sh and bench/latency.sh.
 *
 *   storm RATE SECONDS      RATE 0: as fast as possible
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long worker(double rate, double seconds) {
    char *argv[] = {"/bin/true", NULL};
    double start = now(), end = start + seconds;
    long done = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long step_ns = rate > 0 ? (long)(1e9 / rate) : 0;
    while (now() < end) {
        pid_t pid;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) == 0) {
            waitpid(pid, NULL, 0);
            done++;
        }
        if (step_ns) {
            next.tv_nsec += step_ns;
            while (next.tv_nsec >= 1000000000L) {
                next.tv_nsec -= 1000000000L;
                next.tv_sec++;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        }
    }
    return done;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: storm RATE SECONDS\n");
        return 2;
    }
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    long workers = sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1) workers = 1;
    int fds[2];
    if (pipe(fds) != 0) return 1;
    double start = now();
    for (long i = 0; i < workers; i++) {
        if (fork() == 0) {
            /* Workers end with the storm, however it ends. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            long done = worker(rate / workers, seconds);
            if (write(fds[1], &done, sizeof done) != sizeof done) _exit(1);
            _exit(0);
        }
    }
    long total = 0;
    for (long i = 0; i < workers; i++) {
        long done = 0;
        if (read(fds[0], &done, sizeof done) == sizeof done) total += done;
        wait(NULL);
    }
    double elapsed = now() - start;
    printf("%ld %.3f %.1f\n", total, elapsed, total / elapsed);
    return 0;
}
