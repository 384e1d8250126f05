/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LD_PRELOAD fault-injection shim for the local fault scenarios (tests/faults/local). Test-only,
 * never installed. Two independent faults, each switched at run time through a small file the
 * test writes, so one process sees the fault come and go without a restart:
 *
 *   GW_FAULT_IO_CTL=FILE      while FILE exists and holds "ENOSPC" or "EIO", write, pwrite,
 *   GW_FAULT_IO_PREFIX=PATH   pwrite64, writev, fsync and fdatasync on descriptors whose path
 *                             starts with PATH fail with that errno (nothing is written). Other
 *                             descriptors (sockets, the log) are untouched.
 *   GW_FAULT_CLOCK_FILE=FILE  FILE holds a signed offset in milliseconds added to CLOCK_REALTIME
 *                             (clock_gettime, gettimeofday, time); CLOCK_MONOTONIC and the other
 *                             clocks are untouched. A missing or empty file means 0.
 *
 * The files are read again at most every 20 ms (monotonic), so the fault follows the test's
 * changes within that time. Relies on glibc's dlsym(RTLD_NEXT) and raw system calls;
 * thread-safe (atomics only).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define REFRESH_NS 20000000LL

/* Exported so that they interpose on libc's; declared here for -Wmissing-prototypes. */
ssize_t write(int fd, const void *buf, size_t n);
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t writev(int fd, const struct iovec *iov, int cnt);
int fsync(int fd);
int fdatasync(int fd);
int clock_gettime(clockid_t id, struct timespec *ts);
int gettimeofday(struct timeval *restrict tv, void *restrict tz);
time_t time(time_t *t);

static _Atomic long long clock_offset_ms;
static _Atomic long long clock_checked_ns = -1;
static _Atomic int io_errno;
static _Atomic long long io_checked_ns = -1;

/* Raw system calls: no recursion into the interposed functions, no dlsym at start-up. */
static long long mono_ns(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Reads up to cap-1 bytes of path into buf; returns the length, or -1 when it cannot be read. */
static int read_small(const char *path, char *buf, size_t cap)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long n = syscall(SYS_read, fd, buf, cap - 1);
    syscall(SYS_close, fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (int)n;
}

static int due(_Atomic long long *checked)
{
    long long now = mono_ns(), last = atomic_load(checked);
    if (last >= 0 && now - last < REFRESH_NS)
        return 0;
    return atomic_compare_exchange_strong(checked, &last, now);
}

static long long offset_ms(void)
{
    const char *file = getenv("GW_FAULT_CLOCK_FILE");
    if (!file)
        return 0;
    if (due(&clock_checked_ns)) {
        char buf[64];
        long long v = 0;
        if (read_small(file, buf, sizeof buf) > 0)
            v = strtoll(buf, NULL, 10);
        atomic_store(&clock_offset_ms, v);
    }
    return atomic_load(&clock_offset_ms);
}

static int io_fault(int fd)
{
    const char *ctl = getenv("GW_FAULT_IO_CTL");
    const char *prefix = getenv("GW_FAULT_IO_PREFIX");
    if (!ctl || !prefix)
        return 0;
    if (due(&io_checked_ns)) {
        char buf[32];
        int e = 0;
        if (read_small(ctl, buf, sizeof buf) > 0)
            e = strncmp(buf, "ENOSPC", 6) == 0 ? ENOSPC : strncmp(buf, "EIO", 3) == 0 ? EIO : 0;
        atomic_store(&io_errno, e);
    }
    int e = atomic_load(&io_errno);
    if (!e)
        return 0;
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    long n = syscall(SYS_readlink, link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return strncmp(target, prefix, strlen(prefix)) == 0 ? e : 0;
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n)
{
    int e = io_fault(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return (ssize_t)syscall(SYS_write, fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    int e = io_fault(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return (ssize_t)syscall(SYS_pwrite64, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    int e = io_fault(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return (ssize_t)syscall(SYS_writev, fd, iov, cnt);
}

int fsync(int fd)
{
    int e = io_fault(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd)
{
    int e = io_fault(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static __typeof__(&clock_gettime) real;
    if (!real)
        real = REAL(clock_gettime);
    int rc = real ? real(id, ts) : (int)syscall(SYS_clock_gettime, id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long off = offset_ms();
        long long ns = (long long)ts->tv_nsec + off % 1000 * 1000000LL;
        long long s = (long long)ts->tv_sec + off / 1000;
        while (ns < 0) {
            ns += 1000000000LL;
            s--;
        }
        while (ns >= 1000000000LL) {
            ns -= 1000000000LL;
            s++;
        }
        ts->tv_sec = (time_t)s;
        ts->tv_nsec = (long)ns;
    }
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
